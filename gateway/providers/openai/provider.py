"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together...), and Azure OpenAI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import orjson

from gateway.config import Deployment, ProviderConfig
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamUnavailable
from gateway.providers.base import HTTPProvider, end_stream, json_answer, map_transport_errors, translated_stream
from gateway.providers.http import Response
from gateway.providers.openai.responses import native
from gateway.providers.sse import DONE, SSEDecoder
from gateway.reply import Reply

_JSON = {"content-type": "application/json"}
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')  # a finish_reason that is not null


# The call a request is made as: None for the chat format, "responses" for the Responses API itself.
Call = str | None


class OpenAIProvider(HTTPProvider[Call]):
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

    # -- HTTPProvider's hooks ----------------------------------------------------------------------------------------

    def request(self, ctx: RequestContext, deployment: Deployment) -> tuple[str, bytes, Call]:
        """The request as it came (its bytes, when nothing changed it), for the deployment's model; with
        stream_options.include_usage on a stream, so that the gateway gets usage (the relay strips the usage chunk
        when the client did not ask for it). A Responses request goes to a server that speaks that API in it, as
        long as no filter changed its chat translation (a redaction, a policy's rewrite): what the upstream gets
        is then what the filters passed."""
        native = ctx.native
        if native is not None and self.config.responses_api and native.api == "responses" and not ctx.body_changed:
            return f"{self.base_url}/responses", orjson.dumps({**native.body, "model": deployment.model}), "responses"
        if ctx.model != deployment.model:
            ctx.set_field("model", deployment.model)
        if ctx.stream and self.stream_usage and not ctx.client_wants_usage:
            options = ctx.body.get("stream_options")
            ctx.set_field("stream_options", {**(options if isinstance(options, dict) else {}), "include_usage": True})
        body = orjson.dumps(ctx.body) if ctx.body_changed else ctx.raw_body
        if self.azure:
            deployment_url = f"{self.base_url}/openai/deployments/{deployment.model}"
            return f"{deployment_url}/{ctx.endpoint}?api-version={self.config.api_version}", body, None
        return f"{self.base_url}/{ctx.endpoint}", body, None

    def streams(self, ctx: RequestContext, response: Response) -> bool:
        # A server that ignores `stream` answers a whole JSON body: it is read as one.
        return response.content_type == "text/event-stream"

    def answer(self, ctx: RequestContext, deployment: Deployment, status: int, content: bytes, call: Call) -> Reply:
        """The answer as it came; its usage and served model noted. One that is not a JSON object is a 502. A
        Response is kept for the ingress, and the pipeline gets its chat completion."""
        data = json_answer(content, self.name)
        if call == "responses" and ctx.native is not None:
            ctx.usage = native.usage_of(data.get("usage"))
            if isinstance(data.get("model"), str):
                ctx.served_model = data["model"]
            ctx.native.answer = data
            ctx.native.chat = orjson.dumps(native.to_chat(data))
            return Reply(status=status, body=ctx.native.chat, headers=_JSON)
        usage = data.get("usage")
        if isinstance(usage, dict):
            ctx.usage = Usage.from_openai(usage)
        model = data.get("model")
        if isinstance(model, str):
            ctx.served_model = model
        return Reply(status=status, body=content, headers=_JSON, decoded_body=(content, data))

    def stream(self, ctx: RequestContext, deployment: Deployment, response: Response, call: Call) -> Reply:
        if call == "responses":
            translator = native.ChatFromResponses(deployment.model)
            return Reply(
                status=response.status,
                stream=translated_stream(self.name, ctx, response, SSEDecoder(), translator),
            )
        return Reply(status=response.status, stream=self._events(ctx, response))

    async def _events(self, ctx: RequestContext, response: Response) -> AsyncIterator[bytes]:
        """The upstream's payloads as they come. A stream that ends with neither `[DONE]` nor a finish_reason was
        cut (a proxy or the server gone between two events): an UpstreamUnavailable (incomplete_stream), so that
        the client's stream ends with an error rather than as a whole answer (and the Responses API does not
        store it as completed). A server that leaves out `[DONE]` but says its finish_reason is whole."""
        decoder = SSEDecoder()
        finished = False
        said_finish = False
        try:
            with map_transport_errors(self.name):
                async for chunk in response.content.iter_any():
                    for payload in decoder.feed(chunk):
                        if payload == DONE:
                            # The answer is whole: the consumer may stop here, and the connection is reusable.
                            finished = said_finish = True
                        elif not said_finish and _FINISH.search(payload) is not None:
                            said_finish = True
                        yield payload
                for payload in decoder.flush():
                    said_finish = said_finish or payload == DONE or _FINISH.search(payload) is not None
                    yield payload
            if not said_finish:
                raise UpstreamUnavailable(
                    f"The stream of the upstream provider {self.name!r} ended before its finish_reason.",
                    provider=self.name,
                    code="incomplete_stream",
                )
            finished = True
        finally:
            end_stream(ctx, response, finished)
