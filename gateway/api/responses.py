"""OpenAI's Responses API: POST /v1/responses, and GET / DELETE /v1/responses/{id}, GET .../input_items.

A Responses request is translated once, at the door, into the canonical OpenAI chat request, as /v1/messages
is: from there it runs the same pipeline as /v1/chat/completions (ctx.endpoint is "chat/completions"), so any
deployment serves it and every filter sees it as it sees a chat request. The answer is translated back: a whole
chat completion into a Response object, a stream through the relay with the Responses encoder.

Conversations live in the gateway (gateway/conversations.py), not in a provider: a response the client asks to
store (the API's default) is kept with its input, per project, so that `previous_response_id` brings the earlier
turns back whichever deployment served them, after a fallback to another provider, a restart, or on another
replica. Ids are the gateway's: `resp_<request id>`, the record's id behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.flow import PipelineEndpoint
from gateway.api.http import (
    bodiless_context,
    canonical_bytes,
    encode_headers,
    query_params,
    send_json,
)
from gateway.api.openai import response_headers
from gateway.api.streaming import Encoder
from gateway.context import NativeRequest, RequestContext
from gateway.errors import GatewayError, InvalidRequest, NotFound, UpstreamUnavailable
from gateway.memory import right_sized
from gateway.providers.openai.responses.answer import response_bytes, to_response
from gateway.providers.openai.responses.native import as_served, native_body
from gateway.providers.openai.responses.request import to_chat_request
from gateway.providers.openai.responses.stream import ResponsesEncoder
from gateway.reply import Reply
from gateway.store.base import StoredResponse
from gateway.store.records import json_bytes
from gateway.types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway

_SHOWN_CHARS = 80  # of an id in an error message


@dataclass(slots=True)
class Turn:
    """What the Responses ingress keeps on the context between the body's parse and the answer."""

    request: dict[str, Any]  # the body as the client sent it
    input_items: list[dict[str, Any]]  # this turn's input, normalised, with ids
    store: bool  # keep the response for GET and for the next turn's previous_response_id


def response_id(ctx: RequestContext) -> str:
    return f"resp_{ctx.request_id}"


class ResponsesEndpoint(PipelineEndpoint):
    """POST /v1/responses on the pipeline: the request's life is PipelineEndpoint's."""

    api = "responses"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, "chat/completions")
        # A deployment may serve it in the Responses API itself: the request then carries its body in that API.
        self.native = any(p.responses_api for p in gateway.config.enabled_providers().values())

    async def parse(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        store = body.get("store")
        if store is None:  # null is the default, as OpenAI takes it
            store = True
        if not isinstance(store, bool):
            raise InvalidRequest("Invalid type for 'store': expected a boolean.", param="store")
        previous = body.get("previous_response_id")
        history: list[dict[str, Any]] = []
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise InvalidRequest(
                    "Invalid type for 'previous_response_id': expected a string.", param="previous_response_id"
                )
            chain = await self.gateway.conversations.history(previous, project=ctx.principal.project)
            if chain is None:
                raise NotFound(
                    f"Previous response with id '{_shown(previous)}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            for earlier in chain:
                history += earlier.input_items
                history += earlier.response.get("output") or ()
        chat, items = to_chat_request(body, history, ctx.request_id)
        if self.native:
            ctx.native = NativeRequest("responses", native_body(body, history + items))
        metadata = body.get("metadata")
        if isinstance(metadata, dict):  # checked by to_chat_request: at most 16 string values
            # Policies match on it and the record keeps it, as a chat request's; the chat body an upstream gets
            # must not carry it (OpenAI takes chat metadata only with store).
            ctx.metadata = metadata
        ctx.keep(Turn(body, items, store and self.gateway.config.responses.store))
        return chat, canonical_bytes(chat)

    def stream_headers(self, ctx: RequestContext, reply: Reply) -> Headers:
        return response_headers(ctx, reply)

    def encoder(self, ctx: RequestContext) -> Encoder:
        turn = _turn(ctx)

        def completed(response: dict[str, Any]) -> None:
            if turn.store:  # encoded only then
                self._keep(ctx, turn, response["id"], json_bytes(response))

        return ResponsesEncoder(
            turn.request, request_id=ctx.request_id, model=ctx.model, created_at=ctx.started_at, on_complete=completed
        )

    async def answer(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        if reply.status < 400:
            try:
                chat = reply.decoded()
            except orjson.JSONDecodeError:
                chat = None
            if not isinstance(chat, dict):
                ctx.error = UpstreamUnavailable(
                    "The upstream answer could not be read as a chat completion.", provider=ctx.provider
                )
                reply = Reply.from_error(ctx.error)
            else:
                turn = _turn(ctx)
                native = ctx.native
                if native is not None and native.answer is not None and reply.body is native.chat:
                    # Served in the Responses API and left as it came by every filter: sent as it came (with the
                    # items a chat answer has no place for), under the gateway's id.
                    body = json_bytes(as_served(native.answer, turn.request, response_id=response_id(ctx)))
                else:
                    # The common answer (a message of text alone) straight to its bytes; the stored row shares them.
                    body = response_bytes(
                        chat, turn.request, request_id=ctx.request_id, model=ctx.model, created_at=ctx.started_at,
                        usage=ctx.usage,
                    ) or json_bytes(
                        to_response(
                            chat, turn.request, request_id=ctx.request_id, model=ctx.model, created_at=ctx.started_at,
                            usage=ctx.usage,
                        )
                    )  # fmt: skip
                if turn.store:
                    self._keep(ctx, turn, response_id(ctx), body)
                ctx.status = reply.status
                ctx.response_body = reply.body  # the answer in OpenAI's chat shape: what content logging reads
                await send_json(send, reply.status, body, response_headers(ctx, reply))
                return
        # Errors are OpenAI's error JSON, as the Responses API answers them.
        ctx.status = reply.status
        ctx.response_body = reply.body
        await send_json(send, reply.status, reply.body, response_headers(ctx, reply))

    def _keep(self, ctx: RequestContext, turn: Turn, stored_id: str, body: bytes) -> None:
        """Store the response `stored_id`, `body` its JSON (the turn asks to: turn.store). Both JSONs kept
        right-sized: memory holds them until they are the least recently used of memory_max."""
        previous = turn.request.get("previous_response_id")
        self.gateway.conversations.save(
            StoredResponse(
                stored_id,
                ctx.principal.project,
                ctx.started_at,
                previous if isinstance(previous, str) else None,
                right_sized(body),
                right_sized(json_bytes(turn.input_items)),
            )
        )


def _turn(ctx: RequestContext) -> Turn:
    turn = ctx.state(Turn)
    assert turn is not None, "the Responses ingress keeps its Turn when it parses the body"
    return turn


class StoredResponsesEndpoint:
    """GET and DELETE /v1/responses/{id}, or (`input_items`) GET /v1/responses/{id}/input_items: the responses the
    gateway stored, each visible to its own project only (another project's id is not found, as on OpenAI)."""

    def __init__(self, gateway: Gateway, *, input_items: bool = False) -> None:
        self.gateway = gateway
        self.input_items = input_items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "GET /v1/responses/{id}/input_items" if self.input_items else f"{scope['method']} /v1/responses/{{id}}"
        ctx, headers = bodiless_context(scope, route)  # the route: the role check's entry (identity/roles.py)
        try:
            await self.gateway.authenticate(ctx)
            wanted = scope["path_params"]["id"]
            project = ctx.principal.project
            conversations = self.gateway.conversations
            if scope["method"] == "DELETE":
                if not await conversations.delete(wanted, project=project):
                    raise _not_found(wanted)
                body = orjson.dumps({"id": wanted, "object": "response", "deleted": True})
            else:
                stored = await conversations.get(wanted, project=project)
                if stored is None:
                    raise _not_found(wanted)
                if self.input_items:
                    body = orjson.dumps(_page(stored.input_items, query_params(scope)))
                else:
                    body = stored.response_json
        except GatewayError as exc:
            await send_json(send, exc.status_code, exc.to_json(), headers + encode_headers(exc.headers))
            return
        await send_json(send, 200, body, headers)


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{_shown(response_id)}' not found.", param="response_id")


def _shown(response_id: str) -> str:
    """An id as an error message names it: a client's id of a megabyte is not sent back whole."""
    return response_id if len(response_id) <= _SHOWN_CHARS else response_id[:_SHOWN_CHARS] + "..."


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """One page of input items, as OpenAI pages lists: `limit` (1..100, 20), `order` (desc, the default, or asc),
    `after` / `before` an item id."""
    limit_text = query.get("limit", "20")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 100:  # "²".isdigit()
        raise InvalidRequest("limit must be an integer from 1 to 100.", param="limit")
    limit = int(limit_text)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    ordered = items if order == "asc" else items[::-1]
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    if "after" in query:
        if query["after"] not in ids:
            raise InvalidRequest(f"No input item with id '{_shown(query['after'])}'.", param="after")
        start = ids.index(query["after"]) + 1
    if "before" in query:
        if query["before"] not in ids:
            raise InvalidRequest(f"No input item with id '{_shown(query['before'])}'.", param="before")
        end = ids.index(query["before"])
    window = ordered[start:end]
    data = window[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": len(window) > limit,
    }
