"""The Provider protocol, the registry of provider types, and the mapping of transport errors."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

import aiohttp
import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, upstream_request
from gateway.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from gateway.reply import Reply


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
    "openai": "gateway.providers.openai:OpenAIProvider",
    "azure": "gateway.providers.openai:OpenAIProvider",
    "anthropic": "gateway.providers.anthropic:AnthropicProvider",
    "gemini": "gateway.providers.gemini:GeminiProvider",
    "mock": "gateway.providers.mock:MockProvider",
}


class TimedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, telling the request it serves when opening a new connection (DNS, TCP, TLS) began and
    ended: the upstream call's `connect` phase. A connection from the pool opens nothing.

    It wraps TCPConnector._create_connection, aiohttp's one path to a new connection, rather than using aiohttp's
    TraceConfig, whose signals would run on every request for an event most requests never have."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - aiohttp's signature
        started = time.perf_counter_ns()
        try:
            return await super()._create_connection(req, traces, timeout)
        finally:
            ctx = upstream_request.get()
            if ctx is not None:
                ctx.upstream_connect = (started, time.perf_counter_ns())


class HTTPProvider:
    """What every HTTP provider shares: one aiohttp ClientSession, made at start-up (on this machine aiohttp's
    client costs about a tenth of httpx's default transport per request), and one ClientTimeout per Timeouts."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    async def open(self) -> None:
        connector = TimedConnector(limit=self.config.max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            # sock_read bounds the wait for the first byte (and any single read); the idle time between stream
            # chunks is enforced by the relay, which knows where events begin and end.
            timeout = aiohttp.ClientTimeout(
                total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.first_byte_s
            )
            self._timeouts[timeouts] = timeout
        return timeout


def build_provider(name: str, config: ProviderConfig) -> Provider:
    module_name, _, class_name = PROVIDERS[config.type].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    provider: Provider = cls(name, config)
    return provider


@contextlib.contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Translate the upstream client's exceptions into UpstreamError, most specific first."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"The upstream provider {provider!r} timed out.", provider=provider) from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"Cannot connect to the upstream provider {provider!r}.", provider=provider) from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise UpstreamUnavailable(
            f"The connection to the upstream provider {provider!r} failed: {type(exc).__name__}.", provider=provider
        ) from exc


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


def end_stream(ctx: RequestContext, response: aiohttp.ClientResponse, finished: bool) -> None:
    """A stream's last word: its end time, and its connection back to the pool only if it was read whole — one
    left early (client gone, idle timeout, error) is closed instead."""
    ctx.upstream_end_ns = time.perf_counter_ns()
    if finished:
        response.release()
    else:
        response.close()


def sleep_forever() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()
