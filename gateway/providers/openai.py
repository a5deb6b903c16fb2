"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together...), and Azure OpenAI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamUnavailable
from gateway.providers.base import HTTPProvider, end_stream, json_answer, map_transport_errors, rejected_from_body
from gateway.providers.sse import DONE, SSEDecoder
from gateway.reply import Reply
from gateway.tracecontext import upstream_headers

_JSON = {"content-type": "application/json"}


class OpenAIProvider(HTTPProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.azure = config.type == "azure"
        self.base_url = config.base_url.rstrip("/")
        headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            if self.azure:
                headers["api-key"] = config.api_key
            else:
                headers["authorization"] = f"Bearer {config.api_key}"
        self.headers = headers
        # Azure and recent OpenAI-compatible servers accept stream_options; an older server may not.
        self.stream_usage = True

    def url(self, endpoint: str, deployment: Deployment) -> str:
        if self.azure:
            deployment_url = f"{self.base_url}/openai/deployments/{deployment.model}"
            return f"{deployment_url}/{endpoint}?api-version={self.config.api_version}"
        return f"{self.base_url}/{endpoint}"

    def request_body(self, ctx: RequestContext, deployment: Deployment) -> bytes:
        if ctx.model != deployment.model:
            ctx.set_field("model", deployment.model)
        if ctx.stream and self.stream_usage and not ctx.client_wants_usage:
            options = ctx.body.get("stream_options")
            ctx.set_field("stream_options", {**(options if isinstance(options, dict) else {}), "include_usage": True})
        return orjson.dumps(ctx.body) if ctx.body_changed else ctx.raw_body

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        session = self._session
        if session is None:
            raise UpstreamUnavailable(f"The provider {self.name!r} is not open.", provider=self.name)
        body = self.request_body(ctx, deployment)
        ctx.upstream_start_ns = time.perf_counter_ns()
        with map_transport_errors(self.name):
            response = await session.post(
                self.url(ctx.endpoint, deployment),
                data=body,
                headers=upstream_headers(self.headers, ctx.trace_id),
                timeout=self.timeout(timeouts),
            )
            ctx.upstream_headers_ns = time.perf_counter_ns()
            if response.status >= 400:
                content = await response.read()
                response.release()
                ctx.upstream_end_ns = time.perf_counter_ns()
                raise rejected_from_body(self.name, response.status, content, response.headers.get("retry-after"))
            if ctx.stream and response.content_type == "text/event-stream":
                return Reply(status=response.status, stream=self._events(ctx, response))
            content = await response.read()
            response.release()
        ctx.upstream_end_ns = time.perf_counter_ns()
        read_answer(ctx, content, self.name)
        return Reply(status=response.status, body=content, headers=_JSON)

    async def _events(self, ctx: RequestContext, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        finished = False
        try:
            with map_transport_errors(self.name):
                async for chunk in response.content.iter_any():
                    for payload in decoder.feed(chunk):
                        if payload == DONE:
                            # The answer is whole: the consumer may stop here, and the connection is reusable.
                            finished = True
                        yield payload
                for payload in decoder.flush():
                    yield payload
            finished = True
        finally:
            end_stream(ctx, response, finished)


def read_answer(ctx: RequestContext, content: bytes, provider: str) -> None:
    """Note the usage and served model of a whole answer; an answer that is not a JSON object is a 502."""
    data = json_answer(content, provider)
    usage = data.get("usage")
    if isinstance(usage, dict):
        ctx.usage = Usage.from_openai(usage)
    model = data.get("model")
    if isinstance(model, str):
        ctx.served_model = model
