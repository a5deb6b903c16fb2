"""What holds the gateway's event loop, by cause, under a steady open-loop load (issue 15, point 3: no single piece
of background work may hold the loop for more than 1 ms).

    .venv/bin/python bench/loop_holds.py bench/reference.yaml            # RATE=400 DURATION=20 WARMUP=3
    RATE=400 DURATION=30 .venv/bin/python bench/loop_holds.py bench/reference-policies.yaml

A child process runs a canned upstream (bench/upstream.py's chat completion, after UPSTREAM_MS, 20 by default, as
../shared/bench's S2) and an open-loop client: RATE requests a second (chat.lua's body), each sent when it is due
whatever the others do, on kept-alive connections. This process runs the gateway on CONFIG as `gateway serve` runs
it (uvicorn, the gateway's protocol, every timer and thread as configured), on asyncio's own loop instead of uvloop
so that every callback can be timed: `Handle._run` is wrapped, and tasks are asyncio's Python tasks, whose step
names its coroutine. Each callback that runs for more than 0.5 ms is kept with its cause:
- a task's step: its coroutine, and the innermost function it resumed in (`Outbox._run < SQLiteStore.write`);
- an I/O callback: the protocol it reads for (`read BoundedHttpToolsProtocol`); a timer or call_soon: its function;
- a collection of the garbage collector, from gc.callbacks, by generation, whatever thread it ran in;
- a job of a worker thread (the SQLite store's, to_thread's), by its function: its CPU time is an upper bound of
  how long it held the GIL (sqlite3 lets it go while SQLite steps, a write() while the system writes), and the
  loop, when it wants the GIL back, waits up to sys.getswitchinterval() for a thread running Python.
`wall` is the callback's time on the clock; `cpu` the main thread's CPU time in it (time.thread_time): what the
wall has beyond it, the loop waited (for the GIL a worker thread held, or for a core another process had). On a
loaded machine read `cpu` (and the gc rows): the wall also counts the other processes' turns.
A 1 ms sampler (a timer's lateness) gives the lag any request would have seen. The client reports its latencies.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import concurrent.futures.thread
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-holds"
KEEP_S = 0.0005  # callbacks longer than this are kept
BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}'
)


# -- the child: upstream and open-loop client ------------------------------------------------------------------------


class _Upstream(asyncio.Protocol):
    """A chat completion after `delay_s`, on kept-alive connections."""

    reply = b""
    delay_s = 0.02

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:head_end].lower()
            start = head.find(b"content-length:")
            end = head_end + 4 + (int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0)
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            asyncio.get_running_loop().call_later(self.delay_s, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.reply)


MAX_CONNS = 512  # under the gateway's server.max_connections (1024)
OPENED = [0]


async def _one(port: int, idle: list[Any], request: bytes, due: float, latencies: list[float]) -> None:
    loop = asyncio.get_running_loop()
    if idle:
        reader, writer = idle.pop()
    elif OPENED[0] < MAX_CONNS:
        OPENED[0] += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:  # an overloaded gateway: the load waits for a connection (its latency counts from when it was due)
        while not idle:  # noqa: ASYNC110 - a bench's poll, 1 ms
            await asyncio.sleep(0.001)
        reader, writer = idle.pop()
    writer.write(request)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:  # a connection idle past the server's keep-alive: closed; a new one
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"not a 200: {head[:200]!r}")
    lowered = head.lower()
    start = lowered.find(b"content-length:")
    if start >= 0:
        await reader.readexactly(int(lowered[start + 15 : lowered.find(b"\r\n", start)]))
    else:
        body = b""
        while not body.endswith(b"0\r\n\r\n"):
            body += await reader.read(65536)
    latencies.append(loop.time() - due)
    idle.append((reader, writer))


async def _child(rate: float, warmup: float, duration: float, upstream_ms: float) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from upstream import completion

    answer = completion()
    _Upstream.reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(answer),
        answer,
    )
    _Upstream.delay_s = upstream_ms / 1000
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    port = int(await loop.run_in_executor(None, sys.stdin.readline))
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (KEY.encode(), len(BODY), BODY)
    )
    idle: list[Any] = []
    for seconds, counted in ((warmup, False), (duration, True)):
        print("counting" if counted else "warming", flush=True)
        latencies: list[float] = []
        tasks = set()
        start = loop.time()
        for i in range(int(seconds * rate)):
            due = start + i / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = loop.create_task(_one(port, idle, request, due, latencies))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(
        orjson.dumps({"n": len(latencies), "p50": pick(0.5), "p99": pick(0.99), "max": latencies[-1] * 1000}).decode()
    )


# -- the tracer ------------------------------------------------------------------------------------------------------


class Holds:
    def __init__(self) -> None:
        self.counting = False
        self.kept: dict[str, list[tuple[float, float]]] = defaultdict(list)  # cause -> [(wall, cpu)]
        self.callbacks = 0
        self.lags: list[float] = []
        self._gc_began = self._gc_cpu = 0.0

    def cause(self, handle: asyncio.Handle, resumed: str) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, _TASK):
            return f"task {owner.get_coro().__qualname__} < {resumed}"  # type: ignore[union-attr]
        name = getattr(callback, "__qualname__", type(callback).__name__)
        protocol = getattr(owner, "_protocol", None)
        if protocol is not None:
            return f"{name.rpartition('.')[2]} {type(protocol).__name__}"
        return name

    def install(self) -> None:
        run = asyncio.events.Handle._run
        holds = self

        def traced(handle: asyncio.Handle) -> None:
            resumed = ""
            owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
            if isinstance(owner, _TASK):
                resumed = _resume_point(owner.get_coro())
            wall, cpu = time.perf_counter(), time.thread_time()
            run(handle)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            if holds.counting:
                holds.callbacks += 1
                if wall > KEEP_S or cpu > KEEP_S:
                    holds.kept[holds.cause(handle, resumed)].append((wall, cpu))

        asyncio.events.Handle._run = traced  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        work = concurrent.futures.thread._WorkItem.run  # type: ignore[attr-defined]

        def timed_work(item: Any) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            work(item)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            if holds.counting and (wall > KEEP_S or cpu > KEEP_S):
                name = getattr(item.fn, "__qualname__", type(item.fn).__name__)
                holds.kept[f"thread {threading.current_thread().name.rpartition('_')[0]}: {name}"].append((wall, cpu))

        concurrent.futures.thread._WorkItem.run = timed_work  # type: ignore[attr-defined]

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began, self._gc_cpu = time.perf_counter(), time.thread_time()
        elif self.counting and self._gc_began:
            pause, cpu = time.perf_counter() - self._gc_began, time.thread_time() - self._gc_cpu
            thread = "" if threading.current_thread() is threading.main_thread() else " (a worker thread)"
            self.kept[f"gc generation {info['generation']}{thread}"].append((pause, cpu))

    async def sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            if self.counting:
                self.lags.append(loop.time() - due)

    def report(self) -> dict[str, Any]:
        rows = []
        for cause, holds in self.kept.items():
            walls, cpus = sorted(h[0] for h in holds), sorted(h[1] for h in holds)
            rows.append(
                {
                    "cause": cause,
                    "over_0.5ms": len(holds),
                    "wall_over_1ms": sum(w > 0.001 for w in walls),
                    "cpu_over_1ms": sum(c > 0.001 for c in cpus),
                    "max_wall_ms": round(walls[-1] * 1000, 2),
                    "max_cpu_ms": round(cpus[-1] * 1000, 2),
                }
            )
        rows.sort(key=lambda r: (-r["cpu_over_1ms"], -r["max_cpu_ms"]))
        lags = sorted(self.lags) or [0.0]
        pick = lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))] * 1000, 3)  # noqa: E731
        return {
            "callbacks": self.callbacks,
            "lag_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
            "rows": rows,
        }


_TASK = asyncio.tasks._PyTask  # type: ignore[attr-defined]


def _resume_point(coro: Any) -> str:
    """The innermost coroutine (or generator) a task's coroutine awaits: where its next step resumes."""
    inner = coro
    while True:
        awaited = (
            getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None) or getattr(inner, "ag_await", None)
        )
        if (
            awaited is None
            or not hasattr(awaited, "cr_frame")
            and not hasattr(awaited, "gi_frame")
            and not hasattr(awaited, "ag_frame")
        ):
            return getattr(inner, "__qualname__", type(inner).__name__)
        inner = awaited


# -- the parent: the gateway under the tracer ------------------------------------------------------------------------


def gateway_config(path: str, upstream_port: int, tmp: str) -> Any:
    from gateway.config import parse_config

    data = yaml.safe_load((ROOT / path).read_text())
    env = {
        **os.environ,
        "GATEWAY_PORT": "0",
        "MOCK_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "BENCH_API_KEY": KEY,
        "BENCH_RUN_DIR": tmp,
    }
    return parse_config(yaml.safe_dump(data), source=path, env=env, base_dir=str(ROOT / "bench"))


async def _parent(path: str, child: subprocess.Popen[str], tmp: str) -> dict[str, Any]:
    import uvicorn

    from gateway.app import build_app
    from gateway.server import uvicorn_options

    assert child.stdout is not None
    assert child.stdin is not None
    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda loop, coro, **kw: _TASK(coro, loop=loop, **kw))
    holds = Holds()
    holds.install()
    upstream_port = int(child.stdout.readline())
    config = gateway_config(path, upstream_port, tmp)
    app = build_app(config)
    options = uvicorn_options(config.server)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", proxy_headers=False, **options
        )
    )
    serving = asyncio.ensure_future(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    sampler = asyncio.ensure_future(holds.sample_lag())
    child.stdin.write(f"{server.servers[0].sockets[0].getsockname()[1]}\n")
    child.stdin.flush()
    client: dict[str, Any] = {}
    while True:
        line = await loop.run_in_executor(None, child.stdout.readline)
        if not line:
            break
        if line.startswith("counting"):
            holds.counting = True
        elif line.startswith("{"):
            client = orjson.loads(line)
            break
    holds.counting = False
    sampler.cancel()
    server.should_exit = True
    await serving
    return {"config": path, "client_latency_ms": client, **holds.report()}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import uvloop

        uvloop.run(_child(*(float(a) for a in sys.argv[2:6])))
        return 0
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    env = os.environ
    args = [env.get("RATE", "400"), env.get("WARMUP", "3"), env.get("DURATION", "20"), env.get("UPSTREAM_MS", "20")]
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    report = os.fdopen(os.dup(1), "w")  # the gateway's access log goes to stdout: /dev/null here
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(_parent(sys.argv[1], child, tmp))
    finally:
        child.kill()
        child.wait()
    sys.stdout = report
    print(
        f"{result['config']}: {result['callbacks']} callbacks counted; lag of a 1 ms timer {result['lag_ms']}; "
        f"client {result['client_latency_ms']}"
    )
    print(f"{'cause':<90} {'>0.5ms':>7} {'wall>1':>7} {'cpu>1':>6} {'max wall':>9} {'max cpu':>8}")
    for row in result["rows"]:
        print(
            f"{row['cause'][:90]:<90} {row['over_0.5ms']:>7} {row['wall_over_1ms']:>7} {row['cpu_over_1ms']:>6} "
            f"{row['max_wall_ms']:>9} {row['max_cpu_ms']:>8}"
        )
    out = os.environ.get("OUT")
    if out:
        Path(out).write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
