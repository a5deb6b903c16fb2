"""Instructions per request of the request driver and routing (issue 15's budget rows), under callgrind.

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p .venv/bin/python bench/micro_route.py MODE N

Runs N requests one after another, in one process and one event loop (uvloop), after a warm-up of WARMUP:
- `full`: chat completions over loopback into the gateway under uvicorn and the gateway's HTTP protocol, as
  `gateway serve` runs it (bench/reference.yaml's pipeline, auth and route, minus the store and the access log),
  routed to an OpenAI-type provider whose upstream is a canned answer on loopback: server, request driver,
  auth, routing, the provider's call through its upstream client, response, record;
- `route`: the router alone, called as the route stage calls it (Router.send then Router.finished), on the
  same provider and upstream: routing and the provider's call through its upstream client;
- `full-mock`, `route-mock`: the same on the built-in mock provider (no upstream, no HTTP client): the gateway's own
  code around the call, with less of the noise that the event loop's timers and the sockets add.
- `stream`, `stream-step`: `full` with a streamed answer (bench/chat.lua's body with "stream": true) from an
  upstream that streams bench/upstream.py's 20 events and `[DONE]` as chunks of a chunked body: in one write
  (`stream`: the gateway reads them all at once), or one event a write, the next written only once the client has
  read the previous one (`stream-step`: one upstream read per event, as a model's tokens come; the usage chunk and
  `[DONE]` come together in the last write, the usage chunk stripped by the gateway);
- `cache-off`, `cache-miss`, `cache-hit`: `full` with the response cache (issue 18): a deterministic body whose
  text carries the request's number (the same bytes' length every time), without the cache filter, with it on
  and every request a miss (each answer kept: the memory backend), and with it on and one body repeated (every
  request after the first a hit, no upstream call).

Background work that runs by the clock (loop lag's sampler, health sync, the telemetry writer, uvicorn's 0.1 s tick,
the disconnect watch's 25 ms sweep) is set to long intervals: under callgrind a request takes some 50 times longer,
and what a timer does per second would count per request, more of it the busier the machine.

The client and the upstream are a few lines of asyncio each, the same in every run. Instructions per request are
the difference between two runs, N=1200 and N=200, over 1000 (start-up and warm-up cancel out):

    bash bench/micro_route.sh full     # prints instructions per request (needs valgrind)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import build_app  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.context import RequestContext  # noqa: E402
from gateway.server import uvicorn_options, watch  # noqa: E402

WARMUP = 200
KEY = "sk-bench-micro"
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]})
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
)
UPSTREAM_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER) + ANSWER
)


def _stream_writes() -> list[bytes]:
    """The streamed answer's writes, one per event but the usage chunk and `[DONE]` together (the client never sees
    the usage chunk: it did not ask for it), each event a chunk of a chunked body, the first after the head."""
    from upstream import stream_events  # bench/upstream.py: the shared bench's mock stream

    events = [b"%x\r\n%s\r\n" % (len(event), event) for event in stream_events()]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    return [head + events[0], *events[1:-2], events[-2] + events[-1] + b"0\r\n\r\n"]


STREAM_BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0,"stream":true}'
)


class Upstream(asyncio.Protocol):
    """Answers every request on a kept-alive connection with the same chat completion."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            streamed = self.buffer.find(b'"stream":true', head_end) >= 0
            self.buffer = self.buffer[end:]
            if not streamed:
                self.transport.write(UPSTREAM_REPLY)
            elif STEPPED:
                STEPPED[0] = self
                self.writes = iter(STREAM_WRITES)
                self.step()
            else:
                self.transport.write(b"".join(STREAM_WRITES))

    def step(self) -> None:
        """`stream-step`: the stream's next write (the client calls it when it has read the previous event)."""
        self.transport.write(next(self.writes))


STREAM_WRITES: list[bytes] = []
STEPPED: list[Any] = []  # `stream-step`: [the upstream connection whose stream is under way]
SERVED: list[Any] = []  # [the app `serving` runs]
# `cache-*`: the answers the memory backend kept, taken out of it once the requests are done and never freed (the
# process ends by os._exit). A running gateway keeps them until they are evicted or it stops: freeing them all at
# the shutdown (the backend's close, then the interpreter's finalization) is not a request's work, but in the
# difference between N=1200 and N=200 it counted ~1,000 instructions per request.
KEPT: list[Any] = []


def config(upstream_port: int, tmp: str, mock: bool, cache: bool = False) -> Any:
    upstream = {"type": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-up"}
    data = {
        "server": {"access_log": False},
        "providers": {"upstream": {"type": "mock"} if mock else upstream},
        "routing": {"breaker": {"sync_interval_s": 3600}},
        "models": {"gpt-4o-mini": {"deployments": [{"provider": "upstream", "model": "gpt-4o-mini"}]}},
        "pipeline": ["auth", "route"],
        "auth": {"mode": "keys", "keys": [{"name": "bench", "key": KEY, "project": "bench"}]},
        "telemetry": {
            "store": "none",
            "flush_interval_ms": 3_600_000,
            "spool_dir": f"{tmp}/spool",
            "pricing_file": str(ROOT / "config/pricing.yaml"),
        },
    }
    if cache:
        data["pipeline"] = ["auth", "cache", "route"]
        data["features"] = {"defaults": {"cache": "exact"}}
    return parse_config(yaml.safe_dump(data), source="micro.yaml", env=os.environ, base_dir=str(ROOT))


@contextlib.asynccontextmanager
async def serving(gateway_config: Any) -> AsyncIterator[int]:
    """The gateway under uvicorn in this process, as `gateway serve` runs it, on a free port (yielded); background
    work that runs by the clock set to long intervals."""
    app = build_app(gateway_config)
    SERVED[:] = [app]
    app.state.gateway.loop_lag.interval_s = 3600
    # A request starts listening for its client's disconnect once it has run for LISTEN_AFTER_S (25 ms), found by
    # a sweep every 25 ms: under callgrind (some 100 times slower) nearly every request outlived it, the more of
    # them the busier the machine, and the count of a mode moved by tens of thousands between two runs (the
    # listening, the sweep's timers) where a gateway at full speed, a request done in a millisecond or a few
    # (S1's 50 connections on one core: ~15 ms), spends nothing of it.
    watch.LISTEN_AFTER_S = 3600.0
    async with serving_app(app, proxy_headers=False, **uvicorn_options(gateway_config.server)) as port:
        yield port


@contextlib.asynccontextmanager
async def serving_app(app: Any, **options: Any) -> AsyncIterator[int]:
    """An ASGI app under uvicorn in this process, on a free port (yielded), with its lifespan; stopped at the end
    (the gateway's lifespan then drains its writers)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False, **options
    )
    server = uvicorn.Server(config)
    stopped = asyncio.Event()

    async def main_loop() -> None:
        # uvicorn's own loop wakes every 0.1 s (its Date header, should_exit): per second, not per request, so
        # under callgrind it counted per request as the machine was slow. One tick at the start, then the stop.
        await server.on_tick(0)
        await stopped.wait()

    server.main_loop = main_loop  # type: ignore[method-assign]
    running = asyncio.ensure_future(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server has no event for it
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        stopped.set()
        await running


async def full(n: int, gateway_config: Any) -> None:
    async with serving(gateway_config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (KEY.encode(), len(BODY), BODY)
        )
        for _ in range(WARMUP + n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            body = b""  # the gateway answers chunked: read to the last chunk
            while not body.endswith(b"0\r\n\r\n"):
                body += await reader.read(65536)
        writer.close()


async def numbered(n: int, gateway_config: Any, repeat: bool) -> None:
    """`full`'s client with a body numbered per request (the same number each time when `repeat`)."""
    async with serving(gateway_config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n" % KEY.encode()
        for i in range(WARMUP + n):
            body = NUMBERED % (0 if repeat else i)
            writer.write(head + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            answer = await reader.readuntil(b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200"), answer
            rest = b""
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await reader.read(65536)
        writer.close()
        cache = SERVED[0].state.gateway.components.cache
        if cache is not None and cache.memory is not None:
            KEPT.append(cache.memory.entries)
            cache.memory.entries = type(cache.memory.entries)()


async def streamed(n: int, gateway_config: Any, step: bool) -> None:
    """`full` with a streamed answer, read to its last chunk; with `step`, the upstream writes the next event each
    time the client has read one more."""
    STREAM_WRITES[:] = _stream_writes()
    if step:
        STEPPED[:] = [None]
    async with serving(gateway_config) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (KEY.encode(), len(STREAM_BODY), STREAM_BODY)
        )
        for _ in range(WARMUP + n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            body = b""
            events = 0
            while not body.endswith(b"0\r\n\r\n"):
                body += await reader.read(65536)
                if step and body.count(b"\n\n") > events and not body.endswith(b"0\r\n\r\n"):
                    events = body.count(b"\n\n")
                    STEPPED[0].step()
            assert body.find(b"data: [DONE]") >= 0, body
            assert body.count(b"\n\n") == 19, body
        writer.close()


NUMBERED = b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Say hello %07d."}]}'


async def route(n: int, gateway_config: Any) -> None:
    app = build_app(gateway_config)
    gateway = app.state.gateway
    gateway.loop_lag.interval_s = 3600
    async with app.app.router.lifespan_context(app.app):
        router = gateway.components.router
        for _ in range(WARMUP + n):
            ctx = RequestContext(
                request_id="0" * 32, endpoint="chat/completions", headers=[], raw_body=BODY, body=orjson.loads(BODY)
            )
            reply = await router.send(ctx)
            router.finished(ctx)
            assert reply.status == 200, reply.body


async def main(mode: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        run, _, provider = mode.partition("-")
        if run == "stream":
            await streamed(n, config(port, tmp, mock=False), step=provider == "step")
        elif run == "cache":
            gateway_config = config(port, tmp, mock=False, cache=provider != "off")
            await numbered(n, gateway_config, repeat=provider == "hit")
        else:
            await {"full": full, "route": route}[run](n, config(port, tmp, mock=provider == "mock"))
    upstream.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
    if KEPT:  # the kept answers are not freed (see KEPT): the process ends here, without finalizing
        sys.stdout.flush()
        os._exit(0)
