"""The OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Every completion-like endpoint is one `CompletionEndpoint`, so every one of them runs the same pipeline.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.http import (
    JSON_TYPE,
    client_request_id,
    encode_headers,
    id_headers,
    parse_json_object,
    read_body,
    send_json,
)
from gateway.api.streaming import relay
from gateway.api.validation import validate
from gateway.context import RequestContext
from gateway.errors import GatewayError, InternalError, ModelNotFound
from gateway.ids import new_id
from gateway.pipeline import Reply
from gateway.types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("gateway")


class CompletionEndpoint:
    """A raw ASGI endpoint: read and check the body once, run the pipeline, answer whole or streamed."""

    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.max_body = int(gateway.config.server.max_body_mb * 1_048_576)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter_ns()
        gateway = self.gateway
        client = scope.get("client")
        raw = b""
        body: dict[str, Any] = {}
        error: GatewayError | None = None
        try:
            raw = await read_body(scope, receive, self.max_body)
            body = parse_json_object(raw)
            validate(self.endpoint, body)
        except GatewayError as exc:
            error = exc
        ctx = RequestContext(
            request_id=new_id(),
            endpoint=self.endpoint,
            headers=scope["headers"],
            raw_body=raw,
            body=body,
            client_ip=client[0] if client else "",
            started_ns=started,
            client_request_id=client_request_id(scope),
        )
        gateway.metrics.in_flight.inc()
        try:
            if error is not None:
                ctx.error = error
                await self._answer(ctx, Reply.from_error(error), send)
                return
            reply, entered = await gateway.pipeline.run(ctx)
            if reply.stream is None:
                reply = await gateway.pipeline.complete(ctx, reply, entered)
                await self._answer(ctx, reply, send)
            else:
                await relay(
                    ctx,
                    reply.stream,
                    send,
                    receive,
                    response_headers(ctx, reply),
                    gateway.pipeline.chunk_filters,
                    gateway.idle_timeout_s(ctx),
                )
                await gateway.pipeline.complete(ctx, reply, entered)
        except Exception:
            # The endpoint is its own last guard (the app routes it past Starlette's error middleware): a bug
            # becomes a 500 in OpenAI's shape, never a stack trace.
            logger.exception("unhandled error in %s, request %s", self.endpoint, ctx.request_id)
            ctx.error = InternalError()
            if not ctx.status:
                await self._answer(ctx, Reply.from_error(ctx.error), send)
        finally:
            gateway.metrics.in_flight.dec()
            gateway.recorder.finish(ctx)

    async def _answer(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        ctx.status = reply.status
        ctx.response_body = reply.body
        await send_json(send, reply.status, reply.body, response_headers(ctx, reply))


def response_headers(ctx: RequestContext, reply: Reply) -> Headers:
    headers: Headers = [] if reply.stream is not None else [JSON_TYPE]
    headers += id_headers(ctx.request_id, ctx.client_request_id)
    if ctx.provider:
        headers.append((b"x-gateway-provider", ctx.provider.encode()))
        model = ctx.served_model or (ctx.deployment.model if ctx.deployment else "")
        headers.append((b"x-gateway-model", model.encode("latin-1", "replace")))
        headers.append((b"x-gateway-attempts", b"%d" % ctx.attempts))
        if ctx.route_reason:
            headers.append((b"x-gateway-route", ctx.route_reason.encode("latin-1", "replace")))
        if "fallback" in ctx.tags:
            headers.append((b"x-gateway-fallback", ctx.tags["fallback"].encode("latin-1", "replace")))
    headers.append((b"x-gateway-overhead-ms", b"%.3f" % (ctx.overhead_ns(time.perf_counter_ns()) / 1e6)))
    if ctx.limit_headers:
        headers += ctx.limit_headers
    for name, value in reply.headers.items():
        if name != "content-type":
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


class ModelsEndpoint:
    """GET /v1/models and /v1/models/{id}: the model groups a caller may use."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.gateway.started_at, "owned_by": "gateway"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = RequestContext(
            request_id=new_id(),
            endpoint="models",
            headers=scope["headers"],
            raw_body=b"",
            body={},
            client_request_id=client_request_id(scope),
        )
        headers = [JSON_TYPE, *id_headers(ctx.request_id, ctx.client_request_id)]
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
