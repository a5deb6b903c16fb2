"""Anthropic's Messages API behind the OpenAI chat format: requests, whole answers, streams and errors translated
both ways (the pure translations, and the choices made where the two APIs differ, are in anthropic_translate.py).

One aiohttp ClientSession per provider, made at start-up, as for OpenAI (see openai.py for why aiohttp).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext
from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.providers.anthropic_translate import (
    AnthropicRequest,
    UnsupportedRequest,
    finish_reason,
    openai_usage,
    to_anthropic,
    to_openai,
    usage_of,
)
from gateway.providers.base import HTTPProvider, end_stream, json_answer, map_transport_errors
from gateway.providers.sse import DONE, SSEDecoder
from gateway.reply import Reply
from gateway.tracecontext import upstream_headers

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
_JSON = {"content-type": "application/json"}

# Anthropic's error types -> OpenAI's, where they differ.
_ERROR_TYPES = {
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "overloaded_error": "server_error",
    "billing_error": "insufficient_quota",
}


class AnthropicProvider(HTTPProvider):
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

    def translate(self, ctx: RequestContext, deployment: Deployment) -> AnthropicRequest:
        if ctx.endpoint != "chat/completions":
            raise UpstreamRejected(
                f"The provider {self.name!r} (Anthropic) serves only /v1/chat/completions.",
                status=400,
                provider=self.name,
                code="unsupported_endpoint",
            )
        try:
            return to_anthropic(ctx.body, deployment.model)
        except UnsupportedRequest as exc:
            raise UpstreamRejected(
                exc.message, status=400, provider=self.name, param=exc.param, code="unsupported_parameter"
            ) from None

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        session = self._session
        if session is None:
            raise UpstreamUnavailable(f"The provider {self.name!r} is not open.", provider=self.name)
        request = self.translate(ctx, deployment)
        body = orjson.dumps(request.body)
        ctx.upstream_start_ns = time.perf_counter_ns()
        with map_transport_errors(self.name):
            response = await session.post(
                self.url,
                data=body,
                headers=upstream_headers(self.headers, ctx.trace_id),
                timeout=self.timeout(timeouts),
            )
            ctx.upstream_headers_ns = time.perf_counter_ns()
            if response.status >= 400:
                content = await response.read()
                response.release()
                ctx.upstream_end_ns = time.perf_counter_ns()
                raise rejected(self.name, response.status, content, response.headers.get("retry-after"))
            if ctx.stream:
                translator = StreamTranslator(deployment.model, int(ctx.started_at), request.answer_tool)
                return Reply(status=200, stream=self._events(ctx, response, translator))
            content = await response.read()
            response.release()
        ctx.upstream_end_ns = time.perf_counter_ns()
        return Reply(status=200, body=self._answer(ctx, content, request.answer_tool), headers=_JSON)

    def _answer(self, ctx: RequestContext, content: bytes, answer_tool: str | None) -> bytes:
        message = json_answer(content, self.name)
        answer = to_openai(message, answer_tool, int(ctx.started_at))
        usage = message.get("usage")
        if isinstance(usage, dict):
            ctx.usage = usage_of(usage)
        if isinstance(message.get("model"), str):
            ctx.served_model = message["model"]
        return orjson.dumps(answer)

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


class StreamTranslator:
    """Anthropic's stream events in, OpenAI `chat.completion.chunk` payloads out.

    Anthropic numbers content blocks (text, tool_use, thinking...); OpenAI has one content string and numbered
    tool calls. Text deltas become content, each tool_use block a tool call with its own index (id and name in
    its first delta, argument fragments after), the answer tool's JSON becomes content, and thinking is dropped:
    OpenAI's chat format has no place for it. The finish chunk and the usage chunk go out at message_stop.
    """

    __slots__ = (
        "model",
        "usage",
        "done",
        "failed",
        "_created",
        "_answer_tool",
        "_head",
        "_counts",
        "_stop",
        "_tools",
        "_answer_blocks",
    )

    def __init__(self, model: str, created: int, answer_tool: str | None) -> None:
        self.model = model
        self._created = created
        self._answer_tool = answer_tool
        self.usage = usage_of({})
        self.done = False
        self.failed = False
        self._head = self._chunk_head("")
        self._counts: dict[str, Any] = {}  # Anthropic's usage fields, the latest value of each
        self._stop: Any = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._answer_blocks: set[int] = set()

    def _chunk_head(self, message_id: str) -> bytes:
        # Every chunk starts alike: serialise that once, then only each choice per event.
        head = {"id": message_id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        return orjson.dumps(head)[:-1] + b',"choices":['

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._head + orjson.dumps({"index": 0, "delta": delta, "finish_reason": finish}) + b"]}"

    def feed_all(self, payloads: list[bytes]) -> list[bytes]:
        """The chunks for these event payloads, up to the end of the message or an error event."""
        out: list[bytes] = []
        for payload in payloads:
            out += self.feed(payload)
            if self.done or self.failed:
                break
        return out

    def feed(self, payload: bytes) -> list[bytes]:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "content_block_delta":  # by far the most frequent: first
            return self._block_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "message_delta":
            self._message_delta(event)
        elif kind == "message_stop":
            return self._message_stop()
        elif kind == "error":
            self.failed = True
            return [orjson.dumps({"error": openai_error(event.get("error"))})]
        # ping, content_block_stop and event types added later carry nothing for the client
        return []

    def _message_start(self, message: Any) -> list[bytes]:
        message = message if isinstance(message, dict) else {}
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        self._head = self._chunk_head(message.get("id") if isinstance(message.get("id"), str) else "")
        self._merge_usage(message.get("usage"))
        return [self._delta({"role": "assistant", "content": ""})]

    def _block_start(self, event: dict[str, Any]) -> list[bytes]:
        block = event.get("content_block")
        index = event.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return []
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [self._delta({"content": block["text"]})]
        if kind != "tool_use":
            return []  # thinking, redacted thinking, server tools: nothing for OpenAI's chat format
        if self._answer_tool is not None and block.get("name") == self._answer_tool:
            self._answer_blocks.add(index)
            return []
        position = self._tools[index] = len(self._tools)
        function = {"name": block.get("name"), "arguments": ""}
        call = {"index": position, "id": block.get("id"), "type": "function", "function": function}
        return [self._delta({"tool_calls": [call]})]

    def _block_delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [self._delta({"content": text})] if isinstance(text, str) and text else []
        if kind != "input_json_delta":
            return []  # thinking_delta, signature_delta, citations_delta
        fragment = delta.get("partial_json")
        index = event.get("index")
        if not isinstance(fragment, str) or not fragment or not isinstance(index, int):
            return []
        if index in self._answer_blocks:
            return [self._delta({"content": fragment})]
        position = self._tools.get(index)
        if position is None:
            return []  # a server tool's input: not the client's to see
        return [self._delta({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})]

    def _message_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop = delta["stop_reason"]
        self._merge_usage(event.get("usage"))

    def _merge_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative and may repeat or omit message_start's: the latest value wins.
        if isinstance(usage, dict):
            self._counts.update((k, v) for k, v in usage.items() if v is not None)
            self.usage = usage_of(self._counts)

    def _message_stop(self) -> list[bytes]:
        self.done = True
        finish = self._delta({}, finish_reason(self._stop, bool(self._tools)))
        # Always sent, as an upstream asked for stream_options.include_usage: the relay strips it when the
        # client did not ask.
        usage = self._head + b'],"usage":' + orjson.dumps(openai_usage(self.usage)) + b"}"
        return [finish, usage]


# -- errors ----------------------------------------------------------------------------------------------------------


def openai_error(error: Any) -> dict[str, Any]:
    """Anthropic's `error` object ({type, message}) as OpenAI's ({message, type, param, code})."""
    info = error if isinstance(error, dict) else {}
    raw_type, raw_message = info.get("type"), info.get("message")
    kind = raw_type if isinstance(raw_type, str) else "api_error"
    message = raw_message if isinstance(raw_message, str) else ""
    lowered = message.lower()
    code: str | None = None
    param: str | None = None
    if "prompt is too long" in lowered or "exceed context limit" in lowered or "context window" in lowered:
        code, param = "context_length_exceeded", "messages"
    elif "content filtering policy" in lowered:
        code = "content_policy_violation"
    elif kind == "not_found_error" and lowered.startswith("model:"):
        code, param = "model_not_found", "model"
    elif kind == "rate_limit_error":
        code = "rate_limit_exceeded"
    elif kind == "billing_error":
        code = "insufficient_quota"
    return {"message": message, "type": _ERROR_TYPES.get(kind, kind), "param": param, "code": code}


def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
    """An Anthropic error answer as the gateway's error. 529 (overloaded) becomes 503: the OpenAI SDK and the
    gateway's router retry a 503, while 529 means nothing to either."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    status = 503 if status == 529 else status
    if not isinstance(error, dict):
        # Not Anthropic's JSON (a proxy's HTML page, say): the status alone speaks.
        message = f"The upstream provider {provider!r} answered {status}."
        return UpstreamRejected(message, status=status, provider=provider, retry_after=retry_after)
    info = openai_error(error)
    return UpstreamRejected(
        info["message"] or f"The upstream provider {provider!r} answered {status}.",
        status=status,
        provider=provider,
        error_type=info["type"],
        code=info["code"],
        param=info["param"],
        retry_after=retry_after,
    )
