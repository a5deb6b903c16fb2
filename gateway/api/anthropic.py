"""POST /v1/messages: Anthropic's Messages API, so that Anthropic's SDKs work against the gateway; and
POST /v1/messages/count_tokens, the count of a Messages request's prompt without running it.

The request is translated once, at the door, into the canonical OpenAI chat request: from there it runs the
same pipeline as /v1/chat/completions (ctx.endpoint is "chat/completions") and can be served by any provider.
The answer is translated back: a whole answer into a Message, a stream through the relay with the Anthropic
encoder. Every error this endpoint answers goes through `send_error`, in Anthropic's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.flow import PipelineEndpoint, unread_body
from gateway.api.http import canonical_bytes, client_request_id, parse_json_object, read_body, send_json
from gateway.api.openai import response_headers
from gateway.api.streaming import Encoder
from gateway.context import RequestContext
from gateway.errors import GatewayError, ModelNotFound, UpstreamUnavailable
from gateway.ids import new_id
from gateway.providers.anthropic.ingress.answer import error_json, openai_error_message, to_message
from gateway.providers.anthropic.ingress.request import to_chat_request
from gateway.providers.anthropic.ingress.stream import AnthropicEncoder
from gateway.reply import Reply
from gateway.types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway


class MessagesEndpoint(PipelineEndpoint):
    """Anthropic's Messages API on the pipeline: the request's life is PipelineEndpoint's."""

    api = "anthropic"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, "chat/completions")

    def request_headers(self, headers: Headers) -> Headers:
        return with_api_key(headers)

    async def parse(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        body = to_chat_request(body)
        # Providers forward ctx.raw_body when no filter changed the request: it must be the canonical body.
        return body, canonical_bytes(body)

    def stream_headers(self, ctx: RequestContext, reply: Reply) -> Headers:
        return _headers(ctx, reply)

    def encoder(self, ctx: RequestContext) -> Encoder:
        return AnthropicEncoder(message_id(ctx), ctx.model, ctx.request_id)

    async def answer(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        if reply.status >= 400:
            # The pipeline's error replies carry OpenAI's JSON; the error itself, when known, says it best.
            error = ctx.error
            if error is not None and error.status_code == reply.status:
                message = error.message
            else:
                message = openai_error_message(reply.body)
            await send_error(ctx, send, reply.status, message, reply.headers)
            return
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            ctx.error = UpstreamUnavailable(
                "The upstream answer could not be read as a chat completion.", provider=ctx.provider
            )
            await send_error(ctx, send, ctx.error.status_code, ctx.error.message, {})
            return
        translated = to_message(answer, message_id=message_id(ctx), model=ctx.model, usage=ctx.usage)
        ctx.status = reply.status
        ctx.response_body = reply.body  # the answer in OpenAI's shape: what content logging reads
        await send_json(send, reply.status, orjson.dumps(translated), _headers(ctx, reply))


class CountTokensEndpoint:
    """POST /v1/messages/count_tokens: `{"input_tokens": N}` for a Messages request's body (no max_tokens needed).

    N is the gateway's own count (gateway/telemetry/tokens.py, tiktoken), of the chat request the body becomes on
    /v1/messages, with the encoding of the model group's first deployment (as the router's context-window check
    counts): an estimate, not what Anthropic's tokenizer would give. Nothing is sent upstream, and nothing is
    recorded; the caller must still hold a key that may use the model (the pipeline's door, as on /v1/models)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tokens = gateway.components.tokens
        self.max_body = int(gateway.config.server.max_body_mb * 1_048_576)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        ctx = RequestContext(
            request_id=new_id(),
            endpoint="messages/count_tokens",
            headers=with_api_key(scope["headers"]),
            raw_body=b"",
            body={},
            client_request_id=client_request_id(scope),
        )
        body_read = False
        try:
            for stage in gateway.pipeline.door:  # the key, before a byte of the body is read (api/flow.py)
                if not stage.identify_now(ctx):
                    await stage.identify(ctx)
            raw = await read_body(scope, receive, self.max_body)
            body_read = True
            chat = to_chat_request(parse_json_object(raw), counting=True)
            ctx.set_body(raw, chat)
            await gateway.authenticate(ctx)  # the role, and the key's allowed_models
            group = gateway.router.resolve(ctx.model)
            if group is None:
                raise ModelNotFound(f"model: {ctx.model}", param="model")  # Anthropic's words for it
            tokens = self.tokens.count_prompt("chat/completions", group.deployments[0].model, chat)
        except GatewayError as exc:
            extra = exc.headers
            if not body_read and unread_body(scope["headers"]):
                extra = {**extra, "connection": "close"}
            await send_error(ctx, send, exc.status_code, exc.message, extra)
            return
        await send_json(send, 200, orjson.dumps({"input_tokens": tokens}), _headers(ctx, Reply(status=200)))


def message_id(ctx: RequestContext) -> str:
    """Anthropic's ids begin msg_; this one names the request by the gateway's id, as request-id does."""
    return f"msg_{ctx.request_id}"


def with_api_key(headers: Headers) -> Headers:
    """Anthropic's SDKs send the key as `x-api-key`: put it first as a Bearer token, so the auth filter (which
    reads the first Authorization header) takes it over any other."""
    for name, value in headers:
        if name == b"x-api-key":
            return [(b"authorization", b"Bearer " + value.strip()), *headers]
    return headers


def _headers(ctx: RequestContext, reply: Reply) -> Headers:
    headers = response_headers(ctx, reply)
    # Where Anthropic's SDKs look for the request id (`request_id` of an answer or an error): the gateway's, as
    # Anthropic's own is the server's.
    headers.append((b"request-id", ctx.request_id.encode()))
    return headers


async def send_error(ctx: RequestContext, send: Send, status: int, message: str, extra: dict[str, str]) -> None:
    """The one place that answers this endpoint's errors: Anthropic's JSON, the gateway's status, Retry-After kept."""
    ctx.status = status
    headers = _headers(ctx, Reply(status=status, headers=extra))
    await send_json(send, status, error_json(status, message, ctx.request_id), headers)
