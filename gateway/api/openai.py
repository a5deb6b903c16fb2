"""The OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Every completion-like endpoint is one `CompletionEndpoint`, so every one of them runs the same pipeline, and lives
the same life (gateway/api/flow.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.flow import PipelineEndpoint
from gateway.api.http import JSON_TYPE, bodiless_context, encode_headers, send_json
from gateway.api.streaming import OPENAI_ENCODER, Encoder
from gateway.api.validation import validate
from gateway.context import RequestContext
from gateway.errors import GatewayError, ModelNotFound
from gateway.reply import Reply
from gateway.server.protocol import send_whole
from gateway.server.timing import TimedCycle
from gateway.types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway


class CompletionEndpoint(PipelineEndpoint):
    """OpenAI's chat/completions, completions and embeddings: the request's life is PipelineEndpoint's."""

    parses_now = True

    def parse_now(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        validate(self.endpoint, body)
        return body, raw

    async def parse(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        return self.parse_now(ctx, body, raw)

    def answer_now(self, ctx: RequestContext, reply: Reply, send: Send) -> bool:
        # Only under the gateway's server can send_whole take the answer: elsewhere, nothing is worked out twice.
        if type(getattr(send, "__self__", None)) is not TimedCycle:
            return False
        ctx.status = reply.status
        ctx.response_body = reply.body
        # uvicorn's send, in one write, without an await. When it cannot (a HEAD, writes paused...), answer works
        # the headers out again: their x-gateway-overhead-ms is then read when they are sent, as it always is.
        return send_whole(send, reply.status, response_headers(ctx, reply), reply.body)

    async def answer(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        ctx.status = reply.status
        ctx.response_body = reply.body
        headers = response_headers(ctx, reply)
        if not send_whole(send, reply.status, headers, reply.body):  # uvicorn's send, in one write, without an await
            await send_json(send, reply.status, reply.body, headers)

    def stream_headers(self, ctx: RequestContext, reply: Reply) -> Headers:
        return response_headers(ctx, reply)

    def encoder(self, ctx: RequestContext) -> Encoder:
        return OPENAI_ENCODER


def response_headers(ctx: RequestContext, reply: Reply) -> Headers:
    if reply.stream is None:
        headers: Headers = [JSON_TYPE]
    else:
        headers = []
    gateway_id = ctx.request_id.encode()  # id_headers, written out
    client_id = ctx.client_request_id
    headers += (
        (b"x-request-id", client_id.encode() if client_id else gateway_id),
        (b"x-gateway-request-id", gateway_id),
    )
    if ctx.provider:
        headers += _route_headers(ctx)
        if "fallback" in ctx.tags:
            headers.append((b"x-gateway-fallback", ctx.tags["fallback"].encode("latin-1", "replace")))
    cache = ctx.cache
    if cache is not None:
        if cache.key:
            headers += (_CACHE_HEADER[cache.status], (b"x-gateway-cache-key", cache.key.encode()))
        else:
            headers.append(_CACHE_HEADER[cache.status])
        if cache.score is not None:
            headers.append((b"x-gateway-cache-score", b"%.4f" % cache.score))
    headers.append((b"x-gateway-overhead-ms", b"%.3f" % (ctx.overhead_ns(time.perf_counter_ns()) / 1e6)))
    if ctx.limit_headers:
        headers += ctx.limit_headers
    for name, value in reply.headers.items():
        if name != "content-type":
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


_CACHE_HEADER = {status: (b"x-gateway-cache", status.encode()) for status in ("hit", "semantic-hit", "miss", "bypass")}

# The headers that say how a request was routed, by what they say: made once per provider, model, attempts and
# route reason (a few per deployment), not per answer. Cleared when it grows past _ROUTED_MAX (model names that
# a wildcard passes on come from clients).
_ROUTED: dict[tuple[str, str, int, str], tuple[tuple[bytes, bytes], ...]] = {}
_ROUTED_MAX = 1024


def _route_headers(ctx: RequestContext) -> tuple[tuple[bytes, bytes], ...]:
    model = ctx.served_model or (ctx.deployment.model if ctx.deployment else "")
    key = (ctx.provider, model, ctx.attempts, ctx.route_reason)
    headers = _ROUTED.get(key)
    if headers is None:
        made = [
            (b"x-gateway-provider", ctx.provider.encode()),
            (b"x-gateway-model", model.encode("latin-1", "replace")),
            (b"x-gateway-attempts", b"%d" % ctx.attempts),
        ]
        if ctx.route_reason:
            made.append((b"x-gateway-route", ctx.route_reason.encode("latin-1", "replace")))
        if len(_ROUTED) >= _ROUTED_MAX:
            _ROUTED.clear()
        headers = _ROUTED[key] = tuple(made)
    return headers


class ModelsEndpoint:
    """GET /v1/models and /v1/models/{id}: the model groups a caller may use."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.gateway.started_at, "owned_by": "gateway"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx, headers = bodiless_context(scope, "models")
        try:
            await self.gateway.authenticate(ctx)
            model_id = scope.get("path_params", {}).get("model_id")
            # A key limited to some models sees only those: the rest do not exist for it, as on OpenAI, where a
            # project's model list leaves out what the project may not use.
            allowed = ctx.principal.allowed_models
            visible = [name for name in self.gateway.models if not allowed or name in allowed]
            if model_id is None:
                data = [self._entry(name) for name in visible]
                body = orjson.dumps({"object": "list", "data": data})
            elif model_id in visible:
                body = orjson.dumps(self._entry(model_id))
            else:
                raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        except GatewayError as exc:
            await send_json(send, exc.status_code, exc.to_json(), headers + encode_headers(exc.headers))
            return
        await send_json(send, 200, body, headers)
