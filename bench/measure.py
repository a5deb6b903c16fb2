"""The bench's measurements: sanity checks, wrk runs, the first-token test, /proc readings, the report.

bench/run.sh starts the mock upstream (nginx) and the gateway, then runs this script pinned to the load CPU;
every setting comes from the environment run.sh exports (see bench/README.md). It prints a table and writes
one JSON result file. Exit status: 0 valid, 1 the run is not valid (errors, failed checks), 2 it could not run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson
import yaml
from client import CHAT, chat_body, check_stream, check_whole, headers, one_stream
from procstat import alive, cpu_seconds, cpu_times, memory_mb
from report import table
from upstream import PORT_OFFSETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass
class Settings:
    run_dir: Path = field(default_factory=lambda: Path(env("BENCH_RUN_DIR", ".")))
    result_file: Path = field(default_factory=lambda: Path(env("BENCH_RESULT_FILE", "bench-result.json")))
    gateway_pid: int = field(default_factory=lambda: int(env("BENCH_GATEWAY_PID", "0")))
    gateway_url: str = field(default_factory=lambda: f"http://127.0.0.1:{env('GATEWAY_PORT', '18380')}")
    port_base: int = field(default_factory=lambda: int(env("BENCH_PORT_BASE", "18300")))
    key: str = field(default_factory=lambda: env("BENCH_API_KEY", "sk-bench-0123456789abcdef"))
    duration: int = field(default_factory=lambda: int(env("DURATION", "10")))
    warmup: int = field(default_factory=lambda: int(env("WARMUP", "2")))
    conns: int = field(default_factory=lambda: int(env("CONNS", "50")))
    low_conns: int = field(default_factory=lambda: int(env("LOW_CONNS", "1")))
    stream_n: int = field(default_factory=lambda: int(env("STREAM_N", "30")))
    scenarios: list[str] = field(default_factory=lambda: env("SCENARIOS", "whole stream low first_token").split())
    config: str = field(default_factory=lambda: env("GATEWAY_CONFIG", "bench/gateway.bench.yaml"))
    chunk_delay_ms: float = field(default_factory=lambda: float(env("CHUNK_DELAY_MS", "10")))
    drain_s: float = field(default_factory=lambda: float(env("DRAIN_S", "0.6")))
    load_cpu: str = field(default_factory=lambda: env("LOAD_CPU", "0"))
    gateway_cpu: str = field(default_factory=lambda: env("GATEWAY_CPU", "1"))

    def upstream(self, variant: str) -> str:
        return f"http://127.0.0.1:{self.port_base + PORT_OFFSETS[variant]}"


S = Settings()
WARNINGS: list[str] = []


def warn(message: str) -> None:
    WARNINGS.append(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """The run cannot go on: exit status 2, as run.sh documents."""
    say(f"bench: {message}")
    raise SystemExit(2)


# --- the upstream's request counter -----------------------------------------------------------------------------


def upstream_requests(client: httpx.Client) -> int:
    """nginx's total request count (stub_status), minus the status request itself."""
    text = client.get(f"{S.upstream('status')}/status").text
    return int(text.splitlines()[2].split()[2]) - 1


# --- sanity checks ----------------------------------------------------------------------------------------------


def sanity_checks(client: httpx.Client) -> list[dict[str, Any]]:
    gw = S.gateway_url
    key = S.key
    checks = [
        ("whole, direct", lambda: check_whole(client, S.upstream("whole"), "gpt-4o-mini", key)),
        ("whole, gateway", lambda: check_whole(client, gw, "gpt-4o-mini", key)),
        ("stream, direct", lambda: check_stream(client, S.upstream("stream"), "gpt-4o-mini", key, usage=True)),
        ("stream + usage, gateway", lambda: check_stream(client, gw, "gpt-4o-mini-stream", key, usage=True)),
        ("stream, gateway", lambda: check_stream(client, gw, "gpt-4o-mini-stream", key, usage=False)),
        ("slow stream, gateway", lambda: check_stream(client, gw, "gpt-4o-mini-stream-slow", key, usage=True)),
    ]
    results = []
    for name, check in checks:
        try:
            problem = check()
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        results.append({"check": name, "ok": problem is None, "problem": problem})
    # The pipeline must really authenticate: a wrong key is refused.
    r = client.post(gw + CHAT, content=chat_body("gpt-4o-mini"), headers=headers("sk-wrong"))
    problem = None if r.status_code == 401 else f"a wrong key got HTTP {r.status_code}, not 401"
    results.append({"check": "wrong key refused, gateway", "ok": problem is None, "problem": problem})
    return results


def wait_ready(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while True:
            if not alive(S.gateway_pid):
                fail(f"the gateway exited during start-up: see {S.run_dir / 'gateway.log'}")
            try:
                if client.get(f"{S.gateway_url}/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                fail(f"the gateway was not ready after {timeout_s:g} s: see {S.run_dir / 'gateway.log'}")
            time.sleep(0.1)


# --- load runs (wrk) --------------------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    target: str  # direct | gateway
    url: str
    model: str
    stream: bool
    conns: int
    warmup: bool = False


def wrk(run: Run, seconds: int, out: Path) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{run.conns}", f"-d{seconds}s", "--timeout", "5s", "--latency",
        "-s", str(HERE / "chat.lua"), run.url + CHAT,
    ]  # fmt: skip
    environment = {
        **os.environ,
        "BENCH_KEY": S.key,
        "BENCH_MODEL": run.model,
        "BENCH_STREAM": "1" if run.stream else "",
        "BENCH_OUT": str(out),
    }
    text = subprocess.run(cmd, env=environment, capture_output=True, text=True, check=True).stdout
    out.with_suffix(".txt").write_text(text)
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    return result


def load_run(run: Run, client: httpx.Client) -> dict[str, Any]:
    name = f"{run.scenario}-{run.target}"
    gateway = run.target == "gateway"
    if run.warmup and S.warmup > 0:
        say(f"  {name}: warm-up {S.warmup} s")
        wrk(run, S.warmup, S.run_dir / f"{name}-warmup.json")
        time.sleep(S.drain_s)
    say(f"  {name}: {run.conns} connection(s), {S.duration} s")
    before_up = upstream_requests(client)
    before_cpu = cpu_seconds(S.gateway_pid)
    before_times = cpu_times(S.gateway_cpu)
    w = wrk(run, S.duration, S.run_dir / f"{name}.json")
    time.sleep(S.drain_s)  # let the requests still in flight finish, and telemetry flush its batch
    cpu = cpu_seconds(S.gateway_pid) - before_cpu
    after_times = cpu_times(S.gateway_cpu)
    times = {k: after_times[k] - before_times[k] for k in after_times}
    upstream = upstream_requests(client) - before_up - 1  # the `before` status read counts once
    requests = w["requests"]
    seconds = w["duration_us"] / 1e6
    errors = w["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    result: dict[str, Any] = {
        "scenario": run.scenario,
        "target": run.target,
        "url": run.url + CHAT,
        "model": run.model,
        "stream": run.stream,
        "conns": run.conns,
        "seconds": round(seconds, 3),
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "latency_ms": {k: round(v / 1000, 3) for k, v in w["latency_us"].items()},
        "non_2xx": errors["status"],
        "socket_errors": socket_errors,
        "upstream_requests": upstream,
        "valid": True,
    }
    if gateway:
        result["gateway_cpu_s"] = round(cpu, 3)
        result["gateway_cpu_us_per_request"] = round(cpu / requests * 1e6, 1) if requests else None
        # Of one core, over the load run (the drain's tail of work counts in, its idle time does not).
        result["gateway_cpu_utilisation"] = round(cpu / seconds, 3)
        result["memory"] = memory_mb(S.gateway_pid)
    # What else ran on the gateway's CPU meanwhile (other processes, the hypervisor): noise in the figures above.
    wall = seconds + S.drain_s
    other = times["tasks"] + times["steal"] - (cpu if gateway else 0.0)
    result["other_load_on_gateway_cpu"] = round(max(0.0, other) / wall, 3)
    result["interrupts_on_gateway_cpu"] = round(times["interrupts"] / wall, 3)
    problems = []
    if requests == 0:
        problems.append("no request completed")
    if errors["status"]:
        problems.append(f"{errors['status']} responses with status >= 400")
    if socket_errors:
        problems.append(f"socket errors {errors}")
    # Every client request reaches the upstream once: no caching, no retries, nothing answered on its own.
    # wrk stops with up to `conns` requests in flight, which reach the upstream but are not counted.
    if requests and not (requests * 0.99 - 1 <= upstream <= requests + run.conns + 1):
        problems.append(f"{upstream} upstream requests for {requests} client requests")
    if gateway and not alive(S.gateway_pid):
        problems.append("the gateway died")
    if gateway and result["other_load_on_gateway_cpu"] > 0.1:
        warn(
            f"{name}: something else kept CPU {S.gateway_cpu} {result['other_load_on_gateway_cpu']:.0%} busy during "
            "the run: the figures are noisy (another benchmark or test suite running?)"
        )
    for problem in problems:
        warn(f"{name}: {problem}")
    result["valid"] = not problems
    result["problems"] = problems
    return result


# --- first token (streams, one at a time) -----------------------------------------------------------------------


def first_token_test() -> dict[str, Any]:
    targets = {
        "direct": (S.upstream("stream_slow"), "gpt-4o-mini"),
        "gateway": (S.gateway_url, "gpt-4o-mini-stream-slow"),
    }
    out: dict[str, Any] = {"n": S.stream_n, "chunk_delay_ms": S.chunk_delay_ms, "valid": True}
    for target, (url, model) in targets.items():
        say(f"  first token, {target}: {S.stream_n} streams, one at a time")
        samples: list[dict[str, float]] = []
        failures = 0
        with httpx.Client(timeout=30) as client:
            for i in range(S.stream_n + 3):
                result = one_stream(client, url, model, S.key)
                if isinstance(result, str):
                    failures += 1
                    warn(f"first token, {target}: {result}")
                elif i >= 3:  # three warm-ups: connections opened, code paths warm
                    samples.append(result)
        summary: dict[str, Any] = {"samples": len(samples), "failures": failures}
        for key in ("ttfb", "first_token", "total"):
            values = sorted(s[key] for s in samples)
            summary[f"{key}_ms"] = {
                "p50": round(statistics.median(values), 3) if values else None,
                "p90": round(values[int(0.9 * (len(values) - 1))], 3) if values else None,
                "min": round(values[0], 3) if values else None,
            }
        out[target] = summary
        if failures or not samples:
            out["valid"] = False
    if out["valid"]:
        out["added_ms"] = {
            key: round(out["gateway"][f"{key}_ms"]["p50"] - out["direct"][f"{key}_ms"]["p50"], 3)
            for key in ("ttfb", "first_token", "total")
        }
    return out


# --- telemetry, as the gateway saw it ---------------------------------------------------------------------------


def scrape_metrics(client: httpx.Client) -> dict[str, float]:
    text = client.get(f"{S.gateway_url}/metrics").text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        values[name] = values.get(name, 0.0) + float(value)
    return values


def metric(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k == prefix or k.startswith(prefix + "{"))


def overhead_buckets(m: dict[str, float], count: float) -> dict[str, float]:
    buckets: dict[str, float] = {}
    for name, value in m.items():
        match = re.match(r'gateway_overhead_seconds_bucket\{.*le="([^"]+)"', name)
        if match and count:
            buckets[match.group(1)] = buckets.get(match.group(1), 0.0) + value
    return {le: round(v / count, 5) for le, v in buckets.items()}


def telemetry_summary(client: httpx.Client, sent: int) -> dict[str, Any]:
    time.sleep(0.5)
    m = scrape_metrics(client)
    count = metric(m, "gateway_overhead_seconds_count")
    rows: int | None = None
    database = S.run_dir / "gateway.db"  # where gateway.bench.yaml puts it; another GATEWAY_CONFIG may not
    if database.exists():
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                rows = db.execute("SELECT count(*) FROM model_cost_logs").fetchone()[0]
        except sqlite3.Error as exc:
            warn(f"cannot read the telemetry database: {exc}")
    summary = {
        "requests_sent_to_gateway": sent,
        "gateway_requests_total": metric(m, "gateway_requests_total"),
        "sqlite_rows": rows,
        "written_total": {k: v for k, v in m.items() if k.startswith("gateway_telemetry_written_total")},
        "dropped_total": metric(m, "gateway_telemetry_dropped_total"),
        "sink_errors_total": metric(m, "gateway_telemetry_sink_errors_total"),
        "queue_depth": metric(m, "gateway_telemetry_queue_depth"),
        "self_reported_overhead_us_mean": round(metric(m, "gateway_overhead_seconds_sum") / count * 1e6, 1)
        if count
        else None,
        # Share of requests whose self-reported overhead was at most `le` seconds (whole run, all endpoints).
        "self_reported_overhead_le": overhead_buckets(m, count),
    }
    if summary["dropped_total"]:
        warn(f"the gateway dropped {summary['dropped_total']:g} telemetry records")
    if summary["sink_errors_total"]:
        warn(f"telemetry sink errors: {summary['sink_errors_total']:g}")
    if rows is not None and rows < sent:
        warn(f"{rows} telemetry rows in SQLite for at least {sent} requests answered by the gateway")
    return summary


# --- report -----------------------------------------------------------------------------------------------------


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "gateway"))}


def gateway_log_errors() -> list[str]:
    try:
        with open(S.run_dir / "gateway.log", encoding="utf-8", errors="replace") as f:
            return [line.rstrip() for line in f if re.search(r"Traceback| ERROR | CRITICAL ", line)]
    except OSError:
        return []


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    words = (out.stdout or out.stderr).split()
    return words[1] if len(words) > 1 else "?"


def pipeline_of(path: Path) -> list[str] | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    pipeline = data.get("pipeline") if isinstance(data, dict) else None
    return pipeline if isinstance(pipeline, list) else None


def main() -> int:
    # run.sh stops this script with SIGTERM: exit cleanly, so that subprocess.run kills the wrk it waits for.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    S.run_dir.mkdir(parents=True, exist_ok=True)
    if not S.gateway_pid:
        say("BENCH_GATEWAY_PID is not set: run bench/run.sh")
        return 2
    wait_ready()
    started = time.monotonic()
    client = httpx.Client(timeout=10)
    say("sanity checks")
    checks = sanity_checks(client)
    for c in checks:
        say(f"  {c['check']}: {'ok' if c['ok'] else c['problem']}")
    if not all(c["ok"] for c in checks):
        warn("a sanity check failed: no load is run against a target that answers wrongly")
        return 2
    idle = memory_mb(S.gateway_pid)

    gw = S.gateway_url
    plan = [
        Run("whole", "direct", S.upstream("whole"), "gpt-4o-mini", False, S.conns),
        Run("whole", "gateway", gw, "gpt-4o-mini", False, S.conns, warmup=True),
        Run("stream", "direct", S.upstream("stream"), "gpt-4o-mini", True, S.conns),
        Run("stream", "gateway", gw, "gpt-4o-mini-stream", True, S.conns, warmup=True),
        Run("low", "direct", S.upstream("whole"), "gpt-4o-mini", False, S.low_conns),
        Run("low", "gateway", gw, "gpt-4o-mini", False, S.low_conns, warmup=True),
    ]
    unknown = set(S.scenarios) - {run.scenario for run in plan} - {"first_token"}
    if unknown:
        say(f"SCENARIOS: unknown {sorted(unknown)} (known: whole stream low first_token)")
        return 2
    say("load runs (wrk)")
    runs = [load_run(run, client) for run in plan if run.scenario in S.scenarios]
    first_token: dict[str, Any] | None = None
    if "first_token" in S.scenarios:
        say("first token")
        first_token = first_token_test()
        if not first_token["valid"]:
            warn("the first-token test had failures")
    end_memory = memory_mb(S.gateway_pid)
    # Requests the gateway surely answered (wrk's counts; warm-ups and the in-flight tail come on top).
    sent = sum(r["requests"] for r in runs if r["target"] == "gateway") + (S.stream_n if first_token else 0)
    telemetry = telemetry_summary(client, sent)
    client.close()
    log_errors = gateway_log_errors()
    if log_errors:
        warn(f"the gateway logged {len(log_errors)} error line(s), the first: {log_errors[0][:200]}")

    bench_pipeline = pipeline_of(ROOT / S.config)
    default_pipeline = pipeline_of(ROOT / "gateway.yaml")
    if bench_pipeline != default_pipeline:
        warn(f"{S.config} runs pipeline {bench_pipeline}, gateway.yaml runs {default_pipeline}")
    valid = all(r["valid"] for r in runs) and (first_token or {}).get("valid", True) and alive(S.gateway_pid)
    result: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "valid": valid,
        "git": git_info(),
        "pipeline": bench_pipeline,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "wrk": wrk_version(),
        },
        "params": {
            "config": S.config,
            "scenarios": S.scenarios,
            "duration_s": S.duration,
            "warmup_s": S.warmup,
            "conns": S.conns,
            "low_conns": S.low_conns,
            "stream_n": S.stream_n,
            "chunk_delay_ms": S.chunk_delay_ms,
            "load_cpu": S.load_cpu,
            "gateway_cpu": S.gateway_cpu,
        },
        "checks": checks,
        "runs": runs,
        "first_token": first_token,
        "memory": {"idle": idle, "end": end_memory},
        "telemetry": telemetry,
        "warnings": WARNINGS,
        "measure_seconds": round(time.monotonic() - started, 1),
        "run_dir": str(S.run_dir),
        "result_file": str(S.result_file),
    }
    S.result_file.parent.mkdir(parents=True, exist_ok=True)
    S.result_file.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(result), flush=True)
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
