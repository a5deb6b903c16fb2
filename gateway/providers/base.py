"""The Provider protocol, the registry of provider types, the HTTP call every HTTP provider shares (HTTPProvider:
the providers fill in its hooks), and the mapping of transport errors."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from gateway.providers.http import Client, ClientError, ConnectError, Response, header_block
from gateway.providers.sse import DONE, SSEDecoder
from gateway.reply import Reply
from gateway.tracecontext import traceparent_line


class Provider(Protocol):
    """Turns the canonical request (OpenAI's format, in ctx) into an upstream call and back.

    `send` returns a Reply: a whole JSON body in OpenAI's format (and sets ctx.usage), or for a streamed request a
    Reply whose `stream` yields OpenAI `chat.completion.chunk` payloads. It sets ctx.upstream_* timings and raises
    only UpstreamError subclasses.
    """

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply: ...


PROVIDERS: dict[str, str] = {
    "openai": "gateway.providers.openai.provider:OpenAIProvider",
    "azure": "gateway.providers.openai.provider:OpenAIProvider",
    "anthropic": "gateway.providers.anthropic.provider:AnthropicProvider",
    "gemini": "gateway.providers.gemini.provider:GeminiProvider",
    "mock": "gateway.providers.mock:MockProvider",
}


class UnsupportedRequest(ValueError):
    """A request that cannot be expressed in a provider's API: HTTPProvider answers it with a 400 that names the
    parameter (code unsupported_parameter). Raised by the providers' pure translations, which know no provider."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


Call = TypeVar("Call")


class HTTPProvider(Generic[Call]):
    """What every HTTP provider shares: one upstream client (gateway/providers/http: pooled, kept-alive HTTP/1.1
    connections; made at start-up), the provider's headers as the bytes of a request head, made once, and the
    call itself: `send` posts, checks the status, maps errors, and reads a whole answer or hands over a stream.

    A provider fills in:
    - `headers` (set by its constructor): sent with every call, its key among them;
    - `request(ctx, deployment)`: the request's translation, as (URL, body, call), where `call` is whatever the
      answer's translation needs to remember of the request (None for OpenAI). It may raise UnsupportedRequest
      (a 400 naming the parameter) or an UpstreamError;
    - `answer(ctx, deployment, status, content, call)`: a whole 2xx answer's translation into OpenAI's format,
      noting ctx.usage and ctx.served_model;
    - `stream(ctx, deployment, response, call)`: a streamed 2xx answer as a Reply whose stream yields OpenAI
      chunk payloads, decoded from `response` (which it must end with `end_stream`); a provider whose events are
      not OpenAI's hands `translated_stream` its SSE decoder and a StreamTranslator;
    - `streams(ctx, response)`, asked only of a streamed request: whether this answer is a stream (by default
      yes; an OpenAI-compatible server may answer a whole JSON body);
    - `rejected(provider, status, body, retry_after)`: an error answer (4xx, 5xx) as the gateway's error.
    """

    headers: dict[str, str]

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._client: Client | None = None
        self._head = b""

    async def open(self) -> None:
        # Besides the provider's headers, what aiohttp sent (no User-Agent): the upstream sees the request it saw.
        self._head = header_block({"accept": "*/*", "accept-encoding": "gzip, deflate", **self.headers})
        self._client = Client(self.config.max_connections)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        client = self._client
        if client is None:
            raise UpstreamUnavailable(f"The provider {self.name!r} is not open.", provider=self.name)
        try:
            url, body, call = self.request(ctx, deployment)
        except UnsupportedRequest as exc:
            raise UpstreamRejected(
                exc.message, status=400, provider=self.name, param=exc.param, code="unsupported_parameter"
            ) from None
        except orjson.JSONEncodeError:
            # orjson reads 1,024 levels of nesting but writes 254: a body a filter changed (the deployment's model
            # name, stream_options) cannot be re-encoded when it is nested deeper (a tool schema of 300 levels).
            raise UpstreamRejected(
                "The request is nested too deeply: at most 254 levels.", status=400, provider=self.name,
                code="nested_too_deeply",
            ) from None  # fmt: skip
        ctx.upstream_start_ns = time.perf_counter_ns()
        # map_transport_errors' mapping, written as an except clause: no context manager made per call.
        try:
            response = await client.post(url, self._head + traceparent_line(ctx.trace_id), body, timeouts, ctx)
            ctx.upstream_headers_ns = time.perf_counter_ns()
            if response.status >= 400:
                content = await response.read()
                response.release()
                ctx.upstream_end_ns = time.perf_counter_ns()
                raise self.rejected(self.name, response.status, content, response.headers.get("retry-after"))
            if ctx.stream and self.streams(ctx, response):
                return self.stream(ctx, deployment, response, call)
            try:
                content = await response.read()
            finally:
                response.release()
                ctx.upstream_end_ns = time.perf_counter_ns()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self.name, exc) from exc
        return self.answer(ctx, deployment, response.status, content, call)

    # -- hooks -------------------------------------------------------------------------------------------------------

    def request(self, ctx: RequestContext, deployment: Deployment) -> tuple[str, bytes, Call]:
        raise NotImplementedError

    def answer(self, ctx: RequestContext, deployment: Deployment, status: int, content: bytes, call: Call) -> Reply:
        raise NotImplementedError

    def stream(self, ctx: RequestContext, deployment: Deployment, response: Response, call: Call) -> Reply:
        raise NotImplementedError

    def streams(self, ctx: RequestContext, response: Response) -> bool:
        return True

    @staticmethod
    def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
        return rejected_from_body(provider, status, body, retry_after)


def build_provider(name: str, config: ProviderConfig) -> Provider:
    module_name, _, class_name = PROVIDERS[config.type].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    provider: Provider = cls(name, config)
    return provider


# The upstream client's errors that become UpstreamErrors (transport_error says which).
TRANSPORT_ERRORS = (TimeoutError, ClientError, ConnectionError)


def transport_error(provider: str, exc: BaseException) -> UpstreamTimeout | UpstreamUnavailable:
    """One of TRANSPORT_ERRORS as the gateway's error, most specific first. The messages are those clients saw
    when aiohttp was the client: the client's error classes keep aiohttp's names where a message shows one."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"The upstream provider {provider!r} timed out.", provider=provider)
    if isinstance(exc, ConnectError):
        return UpstreamUnavailable(f"Cannot connect to the upstream provider {provider!r}.", provider=provider)
    return UpstreamUnavailable(
        f"The connection to the upstream provider {provider!r} failed: {type(exc).__name__}.", provider=provider
    )


@contextlib.contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Translate the upstream client's exceptions into UpstreamError, most specific first."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise transport_error(provider, exc) from exc


def rejected_from_body(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
    """An upstream error answer, with its status and, when it is OpenAI-shaped, its message, type and code."""
    error: Any = None
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(body) if body else None
        error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return UpstreamRejected(
            str(error.get("message") or f"The upstream provider answered {status}."),
            status=status,
            provider=provider,
            error_type=error.get("type") if isinstance(error.get("type"), str) else None,
            code=str(error["code"]) if error.get("code") is not None else None,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            retry_after=retry_after,
        )
    message = error if isinstance(error, str) else f"The upstream provider {provider!r} answered {status}."
    return UpstreamRejected(message, status=status, provider=provider, retry_after=retry_after)


def json_answer(content: bytes, provider: str) -> dict[str, Any]:
    """A whole answer's JSON object. Anything else is the upstream's fault: a 502, never a crash."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamUnavailable(
            f"The upstream provider {provider!r} answered with a body that is not a JSON object.",
            provider=provider,
            code="invalid_upstream_response",
        )
    return data


class FeedsPayloads:
    """feed_all, written once for the translators: each payload fed in turn, up to the one that stops the stream
    (the end of the answer, or an error event). A translator defines feed() and stopped."""

    stopped: bool

    def feed(self, payload: bytes) -> list[bytes]:
        raise NotImplementedError

    def feed_all(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in payloads:
            out += self.feed(payload)
            if self.stopped:
                break
        return out


class StreamTranslator(Protocol):
    """A stream in another API's events, translated: the upstream's event payloads in, OpenAI chunk payloads out."""

    @property
    def model(self) -> str: ...  # the served model, once the stream said it

    @property
    def usage(self) -> Usage | None: ...

    @property
    def failed(self) -> bool: ...  # an error event came: its OpenAI error payload was the last output

    @property
    def stopped(self) -> bool: ...  # nothing more to read: the answer is whole, or failed

    @property
    def missing(self) -> str: ...  # what the stream lacks to be whole ("its message_stop event"); "" when whole

    def feed_all(self, payloads: list[bytes]) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...  # the chunks that close a whole answer


_UNGUARDED: AbstractContextManager[None] = contextlib.nullcontext()


async def translated_stream(
    provider: str,
    ctx: RequestContext,
    response: Response,
    decoder: SSEDecoder,
    translator: StreamTranslator,
    guard: Callable[[str], AbstractContextManager[None]] | None = None,
) -> AsyncIterator[bytes]:
    """A provider's SSE stream in OpenAI chunk payloads, through its translator, ending with [DONE] once whole.

    An error event ends it with the error's payload (the relay ends the client's stream with it); a stream that
    ends before it is whole is a 502 (incomplete_stream). Usage and the served model are the translator's, noted
    before [DONE], after which the relay reads no further. `guard` maps what the translation may raise on an
    answer of a shape the provider never sends."""
    finished = False
    try:
        with map_transport_errors(provider), guard(provider) if guard is not None else _UNGUARDED:
            async for chunk in response.content.iter_any():
                for out in translator.feed_all(decoder.feed(chunk)):
                    yield out
                if translator.stopped:
                    break
            else:
                for out in translator.feed_all(decoder.flush()):
                    yield out
        if translator.failed:
            return  # the error payload is out: the relay ends the client's stream with it
        missing = translator.missing
        if missing:
            raise UpstreamUnavailable(
                f"The stream of the upstream provider {provider!r} ended before {missing}.",
                provider=provider,
                code="incomplete_stream",
            )
        for out in translator.finish():
            yield out
        # The relay noted usage from the usage chunk through Usage.from_openai, which may know less than the
        # translator (Anthropic's cache writes): the translator's figures replace it.
        if translator.usage is not None:
            ctx.usage = translator.usage
        ctx.served_model = translator.model
        finished = True
        yield DONE
    finally:
        end_stream(ctx, response, finished)


def end_stream(ctx: RequestContext, response: Response, finished: bool) -> None:
    """A stream's last word: its end time, and its connection back to the pool only if it was read whole — one
    left early (client gone, idle timeout, error) is closed instead."""
    ctx.upstream_end_ns = time.perf_counter_ns()
    if finished:
        response.release()
    else:
        response.close()


def sleep_forever() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()
