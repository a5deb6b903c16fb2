"""What a chat completion and the same request through the Responses API cost the gateway's threads, in counts that
do not follow the machine's speed: context switches, page faults, read and write syscalls and bytes, per request
and per thread (issue 16: where a stored response's CPU goes beyond its instructions).

    .venv/bin/python bench/api_counts.py [API ...]      # chat responses responses-stored (the default: all three)
    N=4000 CONNS=20 ROUNDS=2 PERF=trace .venv/bin/python bench/api_counts.py responses-stored

`gateway serve` runs api-cost.yaml (the pipeline `make run` serves, SQLite telemetry, the access log) in a process
of its own pinned to GATEWAY_CPU, as bench/run.sh runs it; this process, pinned to LOAD_CPU, is its upstream
(bench/micro_route.py's canned chat completion) and its CONNS clients, each sending its requests one after another
on a kept-alive connection (a closed loop, as wrk's: the gateway's core is kept busy, so that its store thread
competes with the event loop for the GIL as under the bench's load). Each round sends WARM requests of an API, then
N counted ones; the counters are read from /proc/<pid>/task/*/{stat,status,io} before and after, once the writers
have drained (SETTLE_S). The event loop's thread is the process's first; the others are named by what they did
(the store's thread writes the database; the spool's, after a spill). The gateway's code is this tree's, or SRC's
(another worktree, to compare). Also printed: the garbage collector's collections and the records the store's
outbox spilled to its spool, per request (/metrics). PERF=trace also counts the syscalls of each API's last round,
by name and thread (`perf trace -s`, attached for the counted requests only); PERF=record samples them (perf
record -g). The rates printed (requests a second) and the CPU times are the machine's: read the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from micro_api import client
from micro_route import ROOT, Upstream

N = int(os.environ.get("N", "4000"))
WARM = int(os.environ.get("WARM", "1000"))
CONNS = int(os.environ.get("CONNS", "20"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SETTLE_S = float(os.environ.get("SETTLE_S", "1.0"))
PERF = os.environ.get("PERF", "")  # trace: syscalls by name and thread; record: a perf.data of cpu-clock samples
GATEWAY_CPU, LOAD_CPU = os.environ.get("GATEWAY_CPU", "1"), os.environ.get("LOAD_CPU", "0")
PORT = int(os.environ.get("GATEWAY_PORT", "18480"))
KEY = "sk-bench-0123456789abcdef"
BODIES = {
    "chat": (
        b"/v1/chat/completions",
        b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
        b'{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}',
    ),
    "responses": (
        b"/v1/responses",
        b'{"model":"gpt-4o-mini","instructions":"You are terse.","input":"Say hello in one short sentence.",'
        b'"max_output_tokens":64,"temperature":0,"store":false}',
    ),
    "responses-stored": (
        b"/v1/responses",
        b'{"model":"gpt-4o-mini","instructions":"You are terse.","input":"Say hello in one short sentence.",'
        b'"max_output_tokens":64,"temperature":0}',
    ),
}
FIELDS = ("utime_ms", "stime_ms", "minflt", "vol_cs", "invol_cs", "syscr", "syscw", "rchar", "wchar")


def threads(pid: int) -> dict[int, dict[str, int]]:
    """Per thread of pid: CPU (ms, for scale only), minor faults, context switches, read/write syscalls and bytes."""
    found: dict[int, dict[str, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            stat = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"{base}/status").read_text()
            io = dict(line.split(": ") for line in Path(f"{base}/io").read_text().splitlines())
        except OSError:
            continue
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        found[int(tid)] = {
            "utime_ms": int(int(stat[11]) * tick_ms),
            "stime_ms": int(int(stat[12]) * tick_ms),
            "minflt": int(stat[7]),
            "vol_cs": int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1)),  # type: ignore[union-attr]
            "invol_cs": int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1)),  # type: ignore[union-attr]
            "syscr": int(io["syscr"]),
            "syscw": int(io["syscw"]),
            "rchar": int(io["rchar"]),
            "wchar": int(io["wchar"]),
        }
    return found


async def send(request: bytes, total: int) -> float:
    started = time.perf_counter()
    share, extra = divmod(total, CONNS)
    await asyncio.gather(*(client(PORT, request, share + (i < extra)) for i in range(CONNS)))
    return time.perf_counter() - started


async def collections() -> dict[str, float]:
    """The garbage collector's collections and their pauses so far, by generation (the gateway's /metrics)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    found = re.findall(r'^gateway_gc_pause_seconds_(count|sum)\{generation="(\d)"\} (\S+)', text, re.M)
    counts = {f"gc{gen}_{kind}": float(value) for kind, gen, value in found}
    # Records the store's outbox spilled to its spool (a record waited spill_after_ms behind a slow write).
    spooled = re.search(r'^gateway_sink_records_total\{outcome="spooled",sink="store"\} (\S+)', text, re.M)
    counts["spooled"] = float(spooled.group(1)) if spooled else 0.0
    return counts


def delta(after: dict[int, dict[str, int]], before: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    return {t: {f: v[f] - before.get(t, dict.fromkeys(FIELDS, 0))[f] for f in FIELDS} for t, v in after.items()}


async def measure(pid: int, api: str, last: bool) -> dict[int, dict[str, int]]:
    path, body = BODIES[api]
    request = (
        b"POST %s HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (path, KEY.encode(), len(body), body)
    )
    await send(request, WARM)
    await asyncio.sleep(SETTLE_S)
    out = Path(tempfile.mkdtemp(prefix=f"api_counts.{api}."))
    tracer = attach(out, pid) if PERF and last else None
    if tracer is not None:
        await asyncio.sleep(1.0)  # attached to every thread
    gc_before, before = await collections(), threads(pid)
    seconds = await send(request, N)
    await asyncio.sleep(SETTLE_S)  # the records' and the responses' writers: a flush interval and their write
    counted = delta(threads(pid), before)
    gc_after = await collections()
    print(
        f"  {api}: collections per 1000 requests (pauses, ms per 1000 requests): "
        + "  ".join(
            f"gen{g} {(gc_after[f'gc{g}_count'] - gc_before[f'gc{g}_count']) * 1000 / N:.2f}"
            f" ({(gc_after[f'gc{g}_sum'] - gc_before[f'gc{g}_sum']) * 1e6 / N:.1f})"
            for g in range(3)
        )
        + f"; records spooled per request {(gc_after['spooled'] - gc_before['spooled']) / N:.3f}"
    )
    if tracer is not None:
        tracer.send_signal(2)
        tracer.wait()
        if PERF == "trace":
            syscalls(out / "trace.txt", pid)
        else:
            print(f"  {api}: {out / 'perf.data'}")
    print(f"  {api}: {N / seconds:.0f} req/s")
    return counted


def attach(out: Path, pid: int) -> subprocess.Popen[bytes]:
    command = (
        ["perf", "trace", "-s", "-o", str(out / "trace.txt")]
        if PERF == "trace"
        else ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-o", str(out / "perf.data")]
    )
    return subprocess.Popen([*command, "-p", str(pid)], stderr=subprocess.DEVNULL)  # fmt: skip


def start(tmp: str, up_port: int) -> tuple[subprocess.Popen[bytes], Any]:
    """`gateway serve` on api-cost.yaml, pinned to GATEWAY_CPU, its output to tmp/gateway.log."""
    # The gateway's code from this tree (the venv's `gateway` may be installed from another checkout) or SRC's.
    env = {**os.environ, "PYTHONPATH": os.environ.get("SRC", str(ROOT)), "BENCH_RUN_DIR": tmp,
           "GATEWAY_PORT": str(PORT), "BENCH_API_KEY": KEY, "MOCK_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
           "MOCK_SLOW_STREAM_BASE_URL": f"http://127.0.0.1:{up_port}/v1"}  # fmt: skip
    log = open(f"{tmp}/gateway.log", "wb")  # noqa: SIM115 - open as long as the gateway runs
    command = ["taskset", "-c", GATEWAY_CPU, str(ROOT / ".venv/bin/gateway"), "serve", "--config",
               str(ROOT / "bench/api-cost.yaml")]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log


def stop(gateway: subprocess.Popen[bytes], log: Any, tmp: str) -> None:
    gateway.terminate()
    gateway.wait()
    log.close()
    errors = [ln for ln in Path(f"{tmp}/gateway.log").read_bytes().splitlines() if b"ERROR" in ln]
    if errors:
        print(f"gateway logged {len(errors)} errors, the first: {errors[0][:300]!r}")


def store_summary(tmp: str) -> None:
    db = Path(tmp) / "gateway.db"
    print(f"store: {db.stat().st_size} bytes, wal {Path(f'{db}-wal').stat().st_size} bytes", end="")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows, response, items = conn.execute(
            "SELECT count(*), avg(length(response)), avg(length(input_items)) FROM responses"
        ).fetchone()
        print(f", stored responses: {rows}, JSON {response} + {items} bytes a row on average")
        if os.environ.get("SHOW_ROW"):
            print(conn.execute("SELECT response, input_items FROM responses LIMIT 1").fetchone())


def syscalls(out: Path, pid: int) -> None:
    """Per thread, the syscalls `perf trace -s` saw, by name, per counted request."""
    tid, names = 0, {}
    per_thread: dict[int, dict[str, int]] = {}
    for line in out.read_text().splitlines():
        head = re.match(r"\s*\S+ \((\d+)\), \d+ events", line)
        if head:
            tid, names = int(head.group(1)), {}
            per_thread[tid] = names
            continue
        row = re.match(r"\s+(\w+)\s+(\d+)\s+\d+\s+[\d.]+", line)
        if row and tid:
            names[row.group(1)] = int(row.group(2))
    for tid, found in sorted(per_thread.items(), key=lambda kv: (kv[0] != pid, kv[0])):
        top = sorted(found.items(), key=lambda kv: -kv[1])
        print(f"    syscalls, {'loop' if tid == pid else f'thread {tid}'}: "
              + "  ".join(f"{k} {v / N:.3f}" for k, v in top if v / N >= 0.002))  # fmt: skip


def report(api: str, runs: list[dict[int, dict[str, int]]], pid: int) -> None:
    print(f"{api}: per request, per thread, mean of {len(runs)} rounds ({N} requests each)")
    tids = sorted({t for r in runs for t in r}, key=lambda t: (t != pid, t))
    for tid in tids:
        sums = {f: sum(r.get(tid, {}).get(f, 0) for r in runs) / (N * len(runs)) for f in FIELDS}
        if not any(sums[f] for f in FIELDS[2:]):
            continue
        name = "loop" if tid == pid else f"thread {tid}"
        print(f"  {name:>14}: " + "  ".join(f"{f} {sums[f]:.3f}" for f in FIELDS))


async def main(apis: list[str]) -> None:
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        gateway, log = start(tmp, up_port)
        try:
            for _ in range(600):
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", PORT)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            runs: dict[str, list[dict[int, dict[str, int]]]] = {api: [] for api in apis}
            for round_ in range(ROUNDS):
                for api in apis[round_ % len(apis) :] + apis[: round_ % len(apis)]:
                    runs[api].append(await measure(gateway.pid, api, round_ == ROUNDS - 1))
            for api in apis:
                report(api, runs[api], gateway.pid)
            store_summary(tmp)
        finally:
            stop(gateway, log, tmp)
    upstream.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    uvloop.run(main(sys.argv[1:] or list(BODIES)))
