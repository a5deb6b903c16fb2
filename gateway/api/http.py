"""Raw ASGI request and response helpers for the hot path: no Request/Response objects per call."""

from __future__ import annotations

import io
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.context import RequestContext
from gateway.errors import ClientClosed, GatewayError, InvalidRequest, RequestTooLarge
from gateway.ids import new_id
from gateway.server.protocol import body_received, send_whole
from gateway.types import Headers, Receive, Scope, Send

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_DAY_S = 86_400.0
JSON_TYPE = (b"content-type", b"application/json")


def client_request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is sane (1 to 128 of letters, digits and . _ : -), else "".

    Kept beside the record as the client's own reference, echoed back, filterable; never the record's id, which is
    the gateway's (two clients may send the same one). Anything else (huge, binary, CR/LF) is ignored, not echoed."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            if _REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return ""


def id_headers(request_id: str, client_id: str) -> Headers:
    """The ids every answer carries: `x-request-id` (the client's when it sent a sane one, else the gateway's) and
    `x-gateway-request-id` (the gateway's: the record's id, what GET /api/v1/traces/{id} takes)."""
    gateway_id = request_id.encode()
    return [(b"x-request-id", client_id.encode() if client_id else gateway_id), (b"x-gateway-request-id", gateway_id)]


def scope_id_headers(scope: Scope) -> Headers:
    """id_headers for an answer with no record of its own (admin and query endpoints, the app's error replies)."""
    return id_headers(new_id(), client_request_id(scope))


def query_params(scope: Scope) -> dict[str, str]:
    """The query string as a dict: the last of a repeated name wins, blank values are dropped."""
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def query_pairs(scope: Scope) -> list[tuple[str, str]]:
    """The query string's pairs in order, repeated names and blank values kept."""
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def time_range(query: dict[str, str]) -> tuple[float, float]:
    """since and until from the query: epoch seconds, or negative for seconds before now (as the trace filters
    read them, resolve_time); the last 24 hours by default."""
    from gateway.store.trace_sql import resolve_time

    now = time.time()
    bounds = []
    for name, default in (("since", now - _DAY_S), ("until", now)):
        problem = f"{name} must be epoch seconds, or negative: seconds before now."
        try:
            value = float(query.get(name) or default)
        except ValueError:
            raise InvalidRequest(problem, param=name) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidRequest(problem, param=name)
        bounds.append(resolve_time(value, now))
    if bounds[1] <= bounds[0]:
        raise InvalidRequest("until must be after since.", param="until")
    return bounds[0], bounds[1]


def whole_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body when the server has it whole already (uvicorn's receive, body_received): taken without an
    await; 413 beyond `limit`. None when it must be received: read_body does."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise _too_large(limit)
            break
    whole = body_received(receive)
    if whole is not None and len(whole) > limit:
        raise _too_large(limit)
    return whole


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most `limit` bytes (413 beyond, before they are kept). A body that came in one message
    is its bytes as they came; one in several is written into one buffer that grows as bytes arrive (realloc, a
    remap once large: no copies) and is returned without a copy (BytesIO.getvalue). The buffer is not sized from
    Content-Length up front: a client announcing 16 MB and sending a byte would hold 16 MB for nothing. A client
    that leaves before its body is whole raises ClientClosed."""
    whole = whole_body(scope, receive, limit)
    if whole is not None:
        return whole
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientClosed()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    buffer = io.BytesIO()
    buffer.write(body)
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosed()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        buffer.write(chunk)
    return buffer.getvalue()


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the limit of {limit / 1_048_576:g} MB.")


def parse_json_object(raw: bytes) -> dict[str, object]:
    if not raw:
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 too, and says so in its message.
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """The bytes of a canonical body an ingress translated (the Responses API's, Anthropic's). orjson reads 1,024
    levels of nesting but writes 254: a body nested deeper than that (a tool's schema of 300 levels) is refused
    here, with a 400, instead of failing as a bug."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequest(
            "The request is nested too deeply: at most 254 levels.", code="nested_too_deeply"
        ) from None


def encode_headers(headers: dict[str, str]) -> Headers:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_json(send: Send, status: int, body: bytes, headers: Headers) -> None:
    if send_whole(send, status, headers, body):  # uvicorn's send, in one write
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: GatewayError, ids: Headers) -> None:
    """The error's JSON with its status and headers; `ids` are the answer's id_headers."""
    await send_json(send, exc.status_code, exc.to_json(), [JSON_TYPE, *ids, *encode_headers(exc.headers)])


def bodiless_context(scope: Scope, endpoint: str) -> tuple[RequestContext, Headers]:
    """The context of a request outside the pipeline that reads no body (the models list, stored responses), and
    the headers its answer starts with: JSON, its ids."""
    ctx = RequestContext(
        request_id=new_id(),
        endpoint=endpoint,
        headers=scope["headers"],
        raw_body=b"",
        body={},
        client_request_id=client_request_id(scope),
    )
    return ctx, [JSON_TYPE, *id_headers(ctx.request_id, ctx.client_request_id)]
