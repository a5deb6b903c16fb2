"""HTTPProvider, the call every HTTP provider shares: a provider made of its hooks alone, in front of a small
upstream on loopback. What the hooks are given and when each is called; the providers' own suites cover their
translations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable
from gateway.providers.base import HTTPProvider, UnsupportedRequest, end_stream, translated_stream
from gateway.providers.sse import DONE, SSEDecoder
from gateway.reply import Reply
from tests.servers import serve

pytestmark = pytest.mark.anyio


class Upstream:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def whole(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        return JSONResponse({"echo": orjson.loads(await request.body())})

    async def refused(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        error = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
        return JSONResponse(error, status_code=429, headers={"retry-after": "7"})

    async def events(self, request: Request) -> Response:
        self.calls.append(request.url.path)
        return Response(b"data: one\n\ndata: two\n\n", media_type="text/event-stream")

    async def cut(self, request: Request) -> Response:
        return Response(b"data: one\n\n", media_type="text/event-stream")

    def app(self) -> Starlette:
        routes = [
            Route("/whole", self.whole, methods=["POST"]),
            Route("/refused", self.refused, methods=["POST"]),
            Route("/events", self.events, methods=["POST"]),
            Route("/cut", self.cut, methods=["POST"]),
        ]
        return Starlette(routes=routes)


class HooksOnly(HTTPProvider[str]):
    """Posts the request's body to {base_url}/{the deployment's model}; the call is the model, read back."""

    def __init__(self, base_url: str, *, stream_answers: bool = True) -> None:
        super().__init__("hooks", ProviderConfig(type="openai", base_url=base_url))
        self.headers = {"content-type": "application/json"}
        self.stream_answers = stream_answers
        self.seen: list[tuple[str, Any]] = []

    def request(self, ctx: RequestContext, deployment: Deployment) -> tuple[str, bytes, str]:
        if ctx.body.get("refuse"):
            raise UnsupportedRequest("Not here.", "refuse")
        return f"{self.config.base_url}/{deployment.model}", ctx.raw_body, deployment.model

    def answer(self, ctx: RequestContext, deployment: Deployment, status: int, content: bytes, call: str) -> Reply:
        self.seen.append(("answer", (status, orjson.loads(content), call)))
        return Reply(status=status, body=content)

    def streams(self, ctx: RequestContext, response: aiohttp.ClientResponse) -> bool:
        return self.stream_answers

    def stream(self, ctx: RequestContext, deployment: Deployment, response: aiohttp.ClientResponse, call: str) -> Reply:
        self.seen.append(("stream", call))
        return Reply(stream=self._lines(ctx, response))

    async def _lines(self, ctx: RequestContext, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            yield await response.read()
        finally:
            end_stream(ctx, response, True)

    @staticmethod
    def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
        return UpstreamRejected(f"{provider} {status} {body!r}", status=status, retry_after=retry_after)


@pytest.fixture
def upstream() -> Iterator[tuple[str, Upstream]]:
    up = Upstream()
    with serve(up.app()) as url:
        yield url, up


def context(body: dict[str, Any]) -> RequestContext:
    raw = orjson.dumps(body)
    return RequestContext(request_id="r1", endpoint="chat/completions", headers=[], raw_body=raw, body=body)


def deployment(model: str) -> Deployment:
    return Deployment(provider="hooks", model=model)


async def test_a_whole_answer_goes_to_the_answer_hook_with_the_call(upstream: tuple[str, Upstream]) -> None:
    url, up = upstream
    provider = HooksOnly(url)
    await provider.open()
    try:
        ctx = context({"model": "m", "stream": True})
        provider.stream_answers = False  # a streamed request whose answer is not a stream is read whole
        reply = await provider.send(ctx, deployment("whole"), Timeouts())
    finally:
        await provider.close()
    assert orjson.loads(reply.body) == {"echo": {"model": "m", "stream": True}}
    assert provider.seen == [("answer", (200, {"echo": {"model": "m", "stream": True}}, "whole"))]
    assert 0 < ctx.upstream_start_ns <= ctx.upstream_headers_ns <= ctx.upstream_end_ns
    assert up.calls == ["/whole"]


async def test_a_stream_goes_to_the_stream_hook(upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    provider = HooksOnly(url)
    await provider.open()
    try:
        ctx = context({"model": "m", "stream": True})
        reply = await provider.send(ctx, deployment("events"), Timeouts())
        assert reply.stream is not None
        assert [chunk async for chunk in reply.stream] == [b"data: one\n\ndata: two\n\n"]
    finally:
        await provider.close()
    assert provider.seen == [("stream", "events")]
    assert ctx.upstream_end_ns >= ctx.upstream_headers_ns > 0


async def test_an_unsupported_request_is_a_400_naming_its_param_and_nothing_is_sent(
    upstream: tuple[str, Upstream],
) -> None:
    url, up = upstream
    provider = HooksOnly(url)
    await provider.open()
    try:
        with pytest.raises(UpstreamRejected) as raised:
            await provider.send(context({"model": "m", "refuse": True}), deployment("whole"), Timeouts())
    finally:
        await provider.close()
    error = raised.value
    assert (error.status_code, error.code, error.param, error.message) == (
        400,
        "unsupported_parameter",
        "refuse",
        "Not here.",
    )
    assert up.calls == []


async def test_an_error_answer_goes_to_the_rejected_hook(upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    provider = HooksOnly(url)
    await provider.open()
    try:
        ctx = context({"model": "m"})
        with pytest.raises(UpstreamRejected) as raised:
            await provider.send(ctx, deployment("refused"), Timeouts())
    finally:
        await provider.close()
    assert raised.value.status_code == 429
    assert raised.value.message.startswith('hooks 429 b\'{"error"')
    assert raised.value.headers == {"retry-after": "7"}
    assert provider.seen == []
    assert ctx.upstream_end_ns >= ctx.upstream_headers_ns > 0


async def test_a_provider_not_open_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable):
        await HooksOnly("http://127.0.0.1:9").send(context({"model": "m"}), deployment("whole"), Timeouts())


class Shouting:
    """A toy stream translation: each payload upper-cased; whole once `two` came."""

    def __init__(self) -> None:
        self.model = "upstream-model"
        self.usage: Usage | None = Usage(prompt_tokens=3, completion_tokens=2)
        self.failed = False
        self.stopped = False
        self.missing = "two"

    def feed_all(self, payloads: list[bytes]) -> list[bytes]:
        if b"two" in payloads:
            self.missing = ""
        return [p.upper() for p in payloads]

    def finish(self) -> list[bytes]:
        return [b"FINISH"]


async def stream_through(url: str, path: str) -> tuple[RequestContext, list[bytes], UpstreamError | None]:
    ctx = context({"model": "m", "stream": True})
    out: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{url}/{path}", data=b"{}")
        try:
            async for chunk in translated_stream("toy", ctx, response, SSEDecoder(), Shouting()):
                out.append(chunk)
        except UpstreamError as exc:
            return ctx, out, exc
    return ctx, out, None


async def test_a_translated_stream_ends_with_the_translators_figures_and_done(upstream: tuple[str, Upstream]) -> None:
    ctx, out, error = await stream_through(upstream[0], "events")
    assert error is None
    assert out == [b"ONE", b"TWO", b"FINISH", DONE]
    assert ctx.usage == Usage(prompt_tokens=3, completion_tokens=2)
    assert ctx.served_model == "upstream-model"
    assert ctx.upstream_end_ns > 0


async def test_a_translated_stream_cut_before_it_is_whole_is_a_502(upstream: tuple[str, Upstream]) -> None:
    ctx, out, error = await stream_through(upstream[0], "cut")
    assert out == [b"ONE"]
    assert isinstance(error, UpstreamUnavailable)
    assert error.code == "incomplete_stream"
    assert error.message == "The stream of the upstream provider 'toy' ended before two."
    assert ctx.usage is None
    assert ctx.upstream_end_ns > 0
