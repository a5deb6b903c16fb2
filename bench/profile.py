"""Where the gateway's CPU goes, per request and by component: S1's load (wrk, 50 connections, the small chat
body) on the gateway that bench/run.sh started, sampled by py-spy over the whole process (every thread, native
frames included, so that the garbage collector and C extensions show), then each sample given to one component.

Run it through bench/profile.sh (which starts the mock upstream and the gateway as bench/run.sh does):

    bash bench/profile.sh bench/reference.yaml            # DURATION=15 CONNS=50 by default
    PROFILE_LOAD=400 bash bench/profile.sh bench/reference.yaml   # 400 req/s, open loop: latency and loop lag

It prints a table — component, share of the gateway's CPU, µs of CPU per request — and writes it with the raw
figures to $BENCH_RUN_DIR/profile.json, beside py-spy's collapsed stacks (profile.txt, for a flame graph).

A sample belongs to the deepest frame of the gateway's own code in its stack (a library under it, orjson under
the recorder, counts as the recorder's), except that a few libraries are components in their own right wherever
they are called from: the garbage collector, prometheus_client (metrics) and the upstream client
(gateway/providers/http; aiohttp, the sinks' client, counts as the sink that calls it).
The collector's own share comes from the gateway's gateway_gc_pause_seconds (a sampler without native frames
puts a collection's samples on the code that allocated when it began). Samples with no gateway frame go by the
library at their top: uvicorn and httptools are the server, asyncio and
uvloop the event loop. CPU per request is the process's CPU time (/proc, all threads) over the requests wrk
completed, split by the samples' shares; py-spy's own cost (--nonblocking: it does not stop the process) is in the
process's CPU time but not in any sample, so shares are of what was sampled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (component, pattern over "gateway/<path> <function>" of the deepest gateway frame): the first that matches wins.
# Paths of earlier layouts (telemetry/sinks.py, limits/...) are matched too, so that a profile of older code
# compares with today's.
GATEWAY_RULES: list[tuple[str, str]] = [
    (
        "body: read, parse, validate",
        r"gateway/api/validation/|gateway/api/(flow|http)\.py .*\b(read_body|parse|decode)",
    ),
    ("filter: auth", r"gateway/filters/auth\.py|gateway/identity/"),
    ("filter: policy", r"gateway/filters/policy\.py|gateway/policy/"),
    ("filter: ratelimit", r"gateway/filters/ratelimit|gateway/state/|gateway/limits/"),
    ("filter: guardrails", r"gateway/filters/guardrails\.py|gateway/guardrails/"),
    ("routing", r"gateway/filters/route\.py|gateway/routing/"),
    ("upstream call (provider)", r"gateway/providers/"),
    ("record building", r"gateway/telemetry/(recorder|pricing|tokens|content)\.py|gateway/store/records\.py"),
    ("telemetry queue", r"gateway/telemetry/queue\.py"),
    ("access log", r"gateway/(sinks|telemetry)/access_log\.py"),
    ("sinks (exporters)", r"gateway/sinks/(exporters|otel)\.py|gateway/telemetry/(sinks|otel)\.py"),
    ("store writer", r"gateway/store/|gateway/(sinks|telemetry)/(outbox|spool|deadletter|sink_metrics)\.py"),
    ("similarity", r"gateway/similarity/|gateway/telemetry/(similarity|embedding)\.py"),
    ("metrics", r"gateway/telemetry/metrics\.py"),
    ("response", r"gateway/api/(streaming|http)\.py|gateway/server/protocol\.py send_whole"),
    ("server", r"gateway/server/|gateway/app\.py"),
    ("request driver", r"gateway/api/|gateway/pipeline\.py|gateway/context\.py|gateway/reply\.py"),
    ("other gateway code", r"gateway/"),
]
# Libraries that are a component wherever they run.
ANYWHERE_RULES: list[tuple[str, str]] = [
    ("garbage collection", r"\bgc_collect|\bcollect_with_callback|\bgc_collect_main|_PyObject_GC_Alloc.*collect"),
    ("metrics", r"prometheus_client/"),
    ("upstream call (provider)", r"gateway/providers/http/"),
]
# Samples without any gateway frame, by the library at their top.
LIBRARY_RULES: list[tuple[str, str]] = [
    ("server", r"uvicorn/|httptools|starlette/"),
    ("store writer", r"sqlite3|asyncpg/"),
    ("event loop", r"asyncio/|uvloop|selectors\.py|epoll"),
    ("worker threads (idle wake-ups)", r"concurrent/futures/|threading\.py"),
]
# Frames at the root of every stack of the main thread (`gateway serve` runs the event loop): not a component.
ROOT_FRAMES = ("gateway/cli.py", "gateway/__main__.py")
GATEWAY_FRAME = re.compile(r"\((?:[^()]*/)?(gateway/[^:()]*)")  # py-spy names files relative to sys.path


def classify(stack: list[str]) -> str:
    """The component of one sample; `stack` runs from the root to the frame that was executing."""
    for frame in reversed(stack):
        for component, pattern in ANYWHERE_RULES:
            if re.search(pattern, frame):
                return component
    for frame in reversed(stack):
        found = GATEWAY_FRAME.search(frame)
        if found and not found.group(1).startswith(ROOT_FRAMES):
            where = f"{found.group(1)} {frame.split(' (')[0]}"  # "gateway/api/flow.py read_body"
            for component, pattern in GATEWAY_RULES:
                if re.search(pattern, where):
                    return component
    for frame in reversed(stack):
        for component, pattern in LIBRARY_RULES:
            if re.search(pattern, frame):
                return component
    return "other"


def read_collapsed(path: Path) -> Counter[str]:
    """py-spy's raw output: one line per distinct stack, frames joined by ';', then a space and the count."""
    shares: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            shares[classify(frames)] += int(count)
    return shares


def cpu_seconds(pid: int) -> float:
    """User and system time of the process and all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, conns: int, out: Path) -> dict[str, object]:
    env = {**os.environ, "BENCH_KEY": os.environ["BENCH_API_KEY"], "BENCH_OUT": str(out)}
    subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s", str(HERE / "chat.lua"), url],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    summary: dict[str, object] = json.loads(out.read_text())
    return summary


def scrape(port: str) -> dict[str, float]:
    """/metrics as {sample line without its value: value}, for the few series read here."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("gateway_gc_pause_seconds_sum", "gateway_event_loop_lag_seconds_")):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def gc_seconds(samples: dict[str, float]) -> float:
    """The garbage collector's pauses (gateway_gc_pause_seconds_sum, every generation)."""
    return sum(v for k, v in samples.items() if k.startswith("gateway_gc_pause_seconds_sum"))


def loop_lag(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """During the load: how many of the loop's 10 ms timers ran over 1 ms and over 5 ms late."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    count = delta("gateway_event_loop_lag_seconds_count")
    return {
        "timers": count,
        "over_1ms": count - delta('gateway_event_loop_lag_seconds_bucket{le="0.001"}'),
        "over_5ms": count - delta('gateway_event_loop_lag_seconds_bucket{le="0.005"}'),
    }


CHAT_BODY = (
    '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    '{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}'
)


def loadgen(url: str, rate: str, seconds: int, out: Path) -> dict[str, object]:
    """An open-loop load at `rate` requests per second (../shared/bench's loadgen, built by its setup.sh): the
    latency and the event loop's lag at a load the gateway keeps up with, where S1's saturation hides them."""
    binary = os.environ.get("LOADGEN", str(ROOT / ".bench" / "bin" / "loadgen"))
    answer = subprocess.run(
        [binary, "-url", url, "-rate", rate, "-duration", f"{seconds}s", "-warmup", "0s", "-body", CHAT_BODY,
         "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {os.environ['BENCH_API_KEY']}",
         "-expect", "chat.completion"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    out.write_text(answer.stdout)
    result = json.loads(answer.stdout.strip().splitlines()[-1])
    latency = result["latency_ms"]
    return {
        "requests": result["ok"],
        "errors": {"failed": result["errors"], "non_2xx": result["non_2xx"], "body": result["body_mismatch"]},
        "latency_ms": {"p50": latency["p50"], "p99": latency["p99"]},
    }


def table(shares: Counter[str], cpu_per_request_us: float, gc_per_request_us: float) -> str:
    total = sum(shares.values()) or 1
    lines = ["| component | share of CPU | µs CPU / request |", "|---|---:|---:|"]
    for component, count in shares.most_common():
        share = count / total
        lines.append(f"| {component} | {share:.1%} | {share * cpu_per_request_us:.1f} |")
    lines.append(f"| **all** (process CPU / requests) | 100% | {cpu_per_request_us:.1f} |")
    gc_share = gc_per_request_us / cpu_per_request_us if cpu_per_request_us else 0.0
    lines.append(f"| of which garbage collection (in the rows above) | {gc_share:.1%} | {gc_per_request_us:.1f} |")
    return "\n".join(lines)


def main() -> int:
    pid = int(os.environ["BENCH_GATEWAY_PID"])
    run_dir = Path(os.environ["BENCH_RUN_DIR"])
    duration = int(os.environ.get("DURATION", "15"))
    warmup = int(os.environ.get("WARMUP", "3"))
    conns = int(os.environ.get("CONNS", "50"))
    sample_rate = os.environ.get("PROFILE_RATE", "250")
    port = os.environ["GATEWAY_PORT"]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    pyspy = Path(sys.executable).parent / "py-spy"
    # Native frames show the garbage collector and C extensions, but py-spy must stop the process to read them
    # (~50 µs a sample, which cuts the throughput tenfold): PROFILE_NATIVE=1. By default it samples without
    # stopping it, Python frames only.
    mode = ["--native"] if os.environ.get("PROFILE_NATIVE", "0") == "1" else ["--nonblocking"]

    wrk(url, warmup, conns, run_dir / "profile-warmup.json")
    stacks = run_dir / "profile.txt"
    sampler = subprocess.Popen(
        [str(pyspy), "record", "--pid", str(pid), "--rate", sample_rate, "--threads", *mode,
         "--format", "raw", "--output", str(stacks), "--duration", str(duration + 2)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1)  # py-spy attaches before the load starts; the second of idle it samples is left out (no --idle)
    cpu0, metrics0 = cpu_seconds(pid), scrape(port)
    rate = os.environ.get("PROFILE_LOAD", "s1")  # s1: wrk with CONNS connections; a number: that rate, open loop
    if rate == "s1":
        load = wrk(url, duration, conns, run_dir / "profile-wrk.json")
    else:
        load = loadgen(url, rate, duration, run_dir / "profile-loadgen.json")
    cpu1, metrics1 = cpu_seconds(pid), scrape(port)
    gc0, gc1 = gc_seconds(metrics0), gc_seconds(metrics1)
    lag = loop_lag(metrics0, metrics1)
    _, err = sampler.communicate(timeout=duration + 60)
    if sampler.returncode != 0 or not stacks.exists():
        print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        return 2
    requests = int(str(load["requests"]))
    errors = sum(int(n) for n in dict(load["errors"]).values())  # type: ignore[call-overload]
    cpu_per_request_us = (cpu1 - cpu0) / max(requests, 1) * 1e6
    gc_per_request_us = (gc1 - gc0) / max(requests, 1) * 1e6
    shares = read_collapsed(stacks)
    text = table(shares, cpu_per_request_us, gc_per_request_us)
    print(f"config {os.environ.get('GATEWAY_CONFIG', '?')}: {requests} requests in {duration} s "
          f"({requests / duration:.0f} req/s, {errors} errors), {cpu1 - cpu0:.2f} s of gateway CPU")  # fmt: skip
    print(text)
    if "latency_ms" in load:
        print(f"latency at {rate} req/s: {load['latency_ms']}")
    print(f"event loop: {lag['over_1ms']:.0f} of {lag['timers']:.0f} timers ran over 1 ms late, "
          f"{lag['over_5ms']:.0f} over 5 ms (gateway_event_loop_lag_seconds)")  # fmt: skip
    (run_dir / "profile.json").write_text(
        json.dumps(
            {
                "config": os.environ.get("GATEWAY_CONFIG"),
                "requests": requests,
                "errors": errors,
                "duration_s": duration,
                "cpu_s": cpu1 - cpu0,
                "cpu_per_request_us": cpu_per_request_us,
                "gc_per_request_us": gc_per_request_us,
                "loop_lag": lag,
                "samples": dict(shares.most_common()),
                "table": text,
            },
            indent=2,
        )
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
