"""Issue 15's bars in instructions: the gateway on a bench config against the bare passthrough, under callgrind.

    bash bench/micro_bar.sh passthrough|direct|reference|policies|hit|full|off|miss     # needs valgrind

S1's ratio (gateway req/s ÷ the bare passthrough's, one core each) is the ratio of their CPU per request; on a
shared machine wall-clock figures are not honest, instruction counts are. This runs, in one process and one event
loop (uvloop), bench/micro_api.py's harness: CONNS clients on kept-alive connections sending S1's request
(bench/chat.lua's body) N times in all, to a canned upstream on loopback (bench/micro_route.py's), through:
- `passthrough`: ../shared/bench/examples/passthrough_proxy.py (Starlette + uvicorn + aiohttp, no filters), the
  bars' yardstick (PASSTHROUGH names another copy of it);
- `reference`, `policies`: the gateway under uvicorn as `gateway serve` runs it, on bench/reference.yaml or
  bench/reference-policies.yaml as they are (SQLite store, its thread counted; the access log to stdout);
- `hit`: the gateway on bench/reference-cache.yaml (reference.yaml with the exact cache on in memory), warmed by the
  warm-up's requests: every counted request is a hit, no upstream call (each answer's x-gateway-cache is checked);
  issue 18's bar is a hit at half the passthrough's CPU, a ratio of 2;
- `miss`, `off`: issue 18's miss bar as S1 measures it. `miss`: bench/reference-cache.yaml with
  `x-gateway-cache: no-cache` on every request (S1's BENCH_EXTRA_HEADERS), the path it takes (the key, no read,
  the answer kept, the upstream call), each answer's `x-gateway-cache: bypass` checked; `off`: bench/reference.yaml
  with the same header (which a gateway without the cache ignores), so that the two differ by the cache alone;
- `full`: the gateway on bench/reference-full.yaml, every filter on (issue 15's last row): the shipped policies
  and guardrails, Redis limits (BENCH_REDIS), the PostgreSQL store (BENCH_PG), Langfuse and OTLP sinks to
  bench/sink_mock.py (started here in a process of its own, not counted: in S1 it runs on the load's core),
  similarity, redacted content; the store's writer, the sinks' encoding and their HTTP client are counted;
- `direct`: the clients straight to the upstream: what the harness itself costs, to subtract from the others
  (in S1 the load and the upstream run on the other core and are not counted).

The ratio for a config is (passthrough − direct) ÷ (config − direct). Background work that runs by the clock is set
to long intervals: under callgrind a request takes some 50 times longer, and what a timer does per second would
count per request; so the record's writer writes full batches (telemetry.batch_size), as it does under S1's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvloop
import yaml
from micro_api import BODIES, CONNS, WARMUP, client
from micro_route import ROOT, Upstream, serving_app

from gateway import runtime
from gateway.app import build_app
from gateway.config import parse_config
from gateway.server import uvicorn_options

KEY = "sk-bench-micro"
CONFIGS = {
    "reference": "bench/reference.yaml",
    "policies": "bench/reference-policies.yaml",
    "hit": "bench/reference-cache.yaml",
    "miss": "bench/reference-cache.yaml",
    "off": "bench/reference.yaml",
    "full": "bench/reference-full.yaml",
}
PASSTHROUGH = os.environ.get("PASSTHROUGH", str(ROOT.parent / "shared/bench/examples/passthrough_proxy.py"))


def gateway_config(name: str, upstream_port: int, tmp: str, sink_port: int = 0) -> Any:
    data = yaml.safe_load((ROOT / CONFIGS[name]).read_text())
    for sink in data["telemetry"].get("sinks", {}).values():  # full: to the sink mock, in full batches
        sink["url"] = f"http://127.0.0.1:{sink_port}"
        sink["flush_interval_ms"] = 3_600_000
    data.setdefault("routing", {})["breaker"] = {"sync_interval_s": 3600}
    telemetry = data["telemetry"]
    telemetry["flush_interval_ms"] = 3_600_000  # full batches, as under load
    telemetry["write_timeout_s"] = 60  # under callgrind a batch takes some 50 times longer: not a stall
    # full: so are PostgreSQL's queries, Redis's answers and the sinks' posts. At their own timeouts (5 s, 250 ms,
    # 10 s) a loaded machine's run failed over to per-process limits, spooled and retried the store's batches and
    # posted again, and counted that work: two runs of the same code read 2,284,041 and 2,384,218.
    telemetry["query_timeout_s"] = 60
    if "limits" in data:
        data["limits"]["timeout_ms"] = 60_000
    for sink in telemetry.get("sinks", {}).values():
        sink["timeout_s"] = 60
    # The flags' and the policies' polls of the store run by the clock: per second, not per request.
    data.setdefault("features", {})["poll_interval_s"] = 3600
    data.setdefault("policies", {})["poll_interval_s"] = 3600
    env = {
        **os.environ,
        "GATEWAY_PORT": "0",
        "MOCK_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "BENCH_API_KEY": KEY,
        "BENCH_RUN_DIR": tmp,
    }
    return parse_config(yaml.safe_dump(data), source=CONFIGS[name], env=env, base_dir=str(ROOT / "bench"))


@contextlib.asynccontextmanager
async def gateway(config: Any) -> AsyncIterator[tuple[int, Any]]:
    """micro_route.serving's gateway, yielding its Gateway beside the port (the warm-up's records are flushed)."""
    app = build_app(config)
    app.state.gateway.loop_lag.interval_s = 3600
    async with serving_app(app, proxy_headers=False, **uvicorn_options(config.server)) as port:
        yield port, app.state.gateway


async def drained(gw: Any) -> None:
    """Flush the telemetry queue and wait until the outboxes have written all it held. After the warm-up: the
    store's first write after it opens checks each row against the table (a batch the previous process may have
    written: gateway/store/base.py Unsure), a per-row INSERT ... WHERE NOT EXISTS, ~68,000 instructions a request.
    After the counted requests: the shutdown cancels a write still out, and writes its rows again through that
    check; on a loaded machine one was out, on a quiet one not, and the count followed the machine's load."""
    gw.queue._wakeup.set()  # its own writer flushes (a second flush_once beside it would race for the same batch)
    deadline = asyncio.get_running_loop().time() + 600
    while len(gw.queue):
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit("the telemetry queue was not flushed in 600 s")
        await asyncio.sleep(0.05)
    for outbox in gw.outboxes:
        outbox._wakeup.set()  # a bench's nudge: the outbox writes a full batch, or after its (hour-long) interval
    while any(outbox.stats()["queued"] for outbox in gw.outboxes):
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit("the records were not written in 600 s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sink_mock() -> AsyncIterator[int]:
    """bench/sink_mock.py in a process of its own (not counted: in S1 it runs on the load's core), on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench/sink_mock.py"), str(port), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def passthrough(upstream_port: int) -> AsyncIterator[tuple[int, None]]:
    os.environ.update(MOCK_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1", GATEWAY_PORT="0")
    spec = importlib.util.spec_from_file_location("passthrough_proxy", PASSTHROUGH)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no passthrough at {PASSTHROUGH} (set PASSTHROUGH)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async with serving_app(module.app, http="httptools") as port:
        yield port, None


@contextlib.asynccontextmanager
async def direct(upstream_port: int) -> AsyncIterator[tuple[int, None]]:
    yield upstream_port, None


async def load(port: int, request: bytes, total: int, expect: bytes | None) -> None:
    share, extra = divmod(total, CONNS)
    await asyncio.gather(*(client(port, request, share + (i < extra), expect) for i in range(CONNS)))


async def main(mode: str, n: int) -> None:
    # Opening the SQLite store under callgrind on a busy machine (load average 15-18) outlasted the gateway's 10 s
    # bound: the records then went to the spool and the store's writes ran another path, in the count (as in
    # micro_api.py's run). Here it is waited for.
    runtime.STORE_OPEN_TIMEOUT_S = 3600.0
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    path, body = BODIES["chat"]
    raw = orjson.dumps(body)
    extra = b"x-gateway-cache: no-cache\r\n" if mode in ("miss", "off") else b""
    request = (
        b"POST %s HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n%s"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (path, KEY.encode(), extra, len(raw), raw)
    )
    # off checks a header as miss does (the client's search through the head, ~1,500 instructions, is the same in
    # both, not the cache's): one that the gateway writes after the cache's.
    expect = {
        "hit": b"\r\nx-gateway-cache: hit\r\n",
        "miss": b"\r\nx-gateway-cache: bypass\r\n",
        "off": b"\r\nx-gateway-overhead-ms: ",
    }.get(mode)
    with tempfile.TemporaryDirectory() as tmp:
        async with sink_mock() if mode == "full" else contextlib.nullcontext(0) as sink_port:
            if mode == "passthrough":
                target = passthrough(upstream_port)
            elif mode == "direct":
                target = direct(upstream_port)
            else:
                target = gateway(gateway_config(mode, upstream_port, tmp, sink_port))
            async with target as (port, gw):  # the gateway's lifespan drains the record's writer at its end
                await load(port, request, WARMUP, None)  # a hit's run: the first answers are misses, kept
                if gw is not None:
                    await drained(gw)
                await load(port, request, n, expect)
                if gw is not None:
                    await drained(gw)
            if mode == "full":  # the sinks delivered: the sink mock counted the counted requests' events
                reader, writer = await asyncio.open_connection("127.0.0.1", sink_port)
                writer.write(b"GET /stats HTTP/1.1\r\nhost: sink\r\nconnection: close\r\n\r\n")
                stats = orjson.loads((await reader.read()).partition(b"\r\n\r\n")[2])
                writer.close()
                if stats["langfuse_events"] < n or stats["otlp_traces"] < 1:
                    raise SystemExit(f"the sinks did not deliver: {stats}")
    upstream.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
