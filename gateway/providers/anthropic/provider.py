"""Anthropic's Messages API behind the OpenAI chat format: the upstream call, on HTTPProvider. The pure translations
are beside it: the request and the whole answer (and the choices made where the two APIs differ) in translate.py,
the stream's events in stream.py, the errors in errors.py.

One aiohttp ClientSession per provider, made at start-up, as for OpenAI (see providers/base.py for why aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from gateway.config import Deployment, ProviderConfig
from gateway.context import RequestContext
from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.pipeline import Reply
from gateway.providers.anthropic.errors import rejected
from gateway.providers.anthropic.stream import StreamTranslator
from gateway.providers.anthropic.translate import to_anthropic, to_openai, usage_of
from gateway.providers.base import HTTPProvider, end_stream, json_answer, map_transport_errors
from gateway.providers.sse import DONE, SSEDecoder

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
_JSON = {"content-type": "application/json"}


class AnthropicProvider(HTTPProvider[str | None]):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        base = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        # Accept both https://api.anthropic.com and https://api.anthropic.com/v1 as the base URL.
        self.url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        headers = {"content-type": "application/json", "anthropic-version": config.api_version or DEFAULT_VERSION}
        headers.update(config.headers)  # e.g. anthropic-beta; the key below cannot be overridden by accident
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self.headers = headers

    # -- HTTPProvider's hooks: the call is the answer tool's name, if any --------------------------------------------

    def request(self, ctx: RequestContext, deployment: Deployment) -> tuple[str, bytes, str | None]:
        if ctx.endpoint != "chat/completions":
            raise UpstreamRejected(
                f"The provider {self.name!r} (Anthropic) serves only /v1/chat/completions.",
                status=400,
                provider=self.name,
                code="unsupported_endpoint",
            )
        request = to_anthropic(ctx.body, deployment.model)
        return self.url, orjson.dumps(request.body), request.answer_tool

    def answer(
        self, ctx: RequestContext, deployment: Deployment, status: int, content: bytes, call: str | None
    ) -> Reply:
        message = json_answer(content, self.name)
        answer = to_openai(message, call, int(ctx.started_at))
        usage = message.get("usage")
        if isinstance(usage, dict):
            ctx.usage = usage_of(usage)
        if isinstance(message.get("model"), str):
            ctx.served_model = message["model"]
        return Reply(status=200, body=orjson.dumps(answer), headers=_JSON)

    def stream(
        self, ctx: RequestContext, deployment: Deployment, response: aiohttp.ClientResponse, call: str | None
    ) -> Reply:
        translator = StreamTranslator(deployment.model, int(ctx.started_at), call)
        return Reply(status=200, stream=self._events(ctx, response, translator))

    @staticmethod
    def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
        return rejected(provider, status, body, retry_after)

    async def _events(
        self, ctx: RequestContext, response: aiohttp.ClientResponse, translator: StreamTranslator
    ) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        finished = False
        try:
            with map_transport_errors(self.name):
                async for chunk in response.content.iter_any():
                    for out in translator.feed_all(decoder.feed(chunk)):
                        yield out
                    if translator.done or translator.failed:
                        break
                else:
                    for out in translator.feed_all(decoder.flush()):
                        yield out
            if translator.failed:
                return  # the error payload is out: the relay ends the client's stream with it
            if not translator.done:
                raise UpstreamUnavailable(
                    f"The stream of the upstream provider {self.name!r} ended before its message_stop event.",
                    provider=self.name,
                    code="incomplete_stream",
                )
            # The relay noted usage from the usage chunk through Usage.from_openai, which knows nothing of cache
            # writes: the whole figures replace it before [DONE], after which the relay reads no further.
            ctx.usage = translator.usage
            ctx.served_model = translator.model
            finished = True
            yield DONE
        finally:
            end_stream(ctx, response, finished)
