"""Anthropic's Messages API behind the OpenAI chat format: the upstream call, on HTTPProvider. The pure translations
are beside it: the request and the whole answer (and the choices made where the two APIs differ) in translate.py,
the stream's events in stream.py, the errors in errors.py.

One upstream client per provider (gateway/providers/http), made at start-up, as for OpenAI.
"""

from __future__ import annotations

import orjson

from gateway.config import Deployment, ProviderConfig
from gateway.context import RequestContext
from gateway.errors import UpstreamRejected
from gateway.providers.anthropic.errors import rejected
from gateway.providers.anthropic.stream import StreamTranslator
from gateway.providers.anthropic.translate import to_anthropic, to_openai, usage_of
from gateway.providers.base import HTTPProvider, json_answer, translated_stream
from gateway.providers.http import Response
from gateway.providers.sse import SSEDecoder
from gateway.reply import Reply

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

    def stream(self, ctx: RequestContext, deployment: Deployment, response: Response, call: str | None) -> Reply:
        translator = StreamTranslator(deployment.model, int(ctx.started_at), call)
        return Reply(status=200, stream=translated_stream(self.name, ctx, response, SSEDecoder(), translator))

    @staticmethod
    def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
        return rejected(provider, status, body, retry_after)
