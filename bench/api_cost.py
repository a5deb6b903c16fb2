"""What the Responses API costs next to the same chat completion, on one gateway process in one run.

bench/run.sh starts the mock upstream and the gateway; this script (its MEASURE) then runs, ROUNDS times and
interleaved, wrk with the same small request as a chat completion, through the Responses API with store: false,
and with the API's default store: true; it reads the gateway's CPU time per request from /proc for each. Then it
times STREAM_N streams one at a time through both APIs (10 ms between the upstream's chunks): first token is the
first content delta (chat) or response.output_text.delta (Responses).

    MEASURE=bench/api_cost.py GATEWAY_CONFIG=bench/api-cost.yaml bash bench/run.sh
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from procstat import cpu_seconds

HERE = Path(__file__).resolve().parent
APIS = ("chat", "responses", "responses-stored")
RUN_DIR = Path(os.environ.get("BENCH_RUN_DIR", "."))
URL = f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '18380')}"
KEY = os.environ.get("BENCH_API_KEY", "sk-bench-0123456789abcdef")
PID = int(os.environ.get("BENCH_GATEWAY_PID", "0"))
DURATION = int(os.environ.get("DURATION", "10"))
WARMUP = int(os.environ.get("WARMUP", "2"))
CONNS = int(os.environ.get("CONNS", "50"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
STREAM_N = int(os.environ.get("STREAM_N", "30"))
PROFILE = os.environ.get("PROFILE") == "1"  # py-spy's samples of each measured run into the run dir


def wrk(api: str, seconds: int, out: Path) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", str(HERE / "api.lua"),
           URL]  # fmt: skip
    environment = {
        **os.environ,
        "BENCH_KEY": KEY,
        "BENCH_MODEL": "gpt-4o-mini",
        "BENCH_API": api,
        "BENCH_OUT": str(out),
    }
    subprocess.run(cmd, env=environment, capture_output=True, check=True)
    result: dict[str, Any] = orjson.loads(out.read_bytes())
    return result


def load(api: str, round_: int) -> dict[str, Any]:
    wrk(api, WARMUP, RUN_DIR / f"{api}-{round_}-warmup.json")
    time.sleep(0.6)
    before = cpu_seconds(PID)
    spy = None
    if PROFILE:  # every thread of the gateway sampled while the load runs (py-spy from the venv)
        out = RUN_DIR / f"{api}-{round_}.spy.txt"
        spy = subprocess.Popen([str(HERE.parent / ".venv/bin/py-spy"), "record", "-r", "250", "-f", "raw", "-o",
                                str(out), "-p", str(PID), "-d", str(DURATION)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    w = wrk(api, DURATION, RUN_DIR / f"{api}-{round_}.json")
    time.sleep(0.6)  # in-flight requests and the record's batch
    cpu = cpu_seconds(PID) - before
    if spy is not None:
        spy.wait()
    errors = sum(w["errors"].values())
    seconds = w["duration_us"] / 1e6
    return {"api": api, "round": round_, "requests": w["requests"], "cpu_s": cpu,
            "rps": round(w["requests"] / seconds, 1),
            "cpu_us_per_request": round(cpu / w["requests"] * 1e6, 1), "errors": errors,
            "p50_ms": w["latency_us"]["p50"] / 1000, "p99_ms": w["latency_us"]["p99"] / 1000}  # fmt: skip


def first_token(client: httpx.Client, api: str) -> float | None:
    if api == "chat":
        path = "/v1/chat/completions"
        body = {"model": "gpt-4o-mini-stream-slow", "stream": True,
                "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}  # fmt: skip
    else:
        path = "/v1/responses"
        body = {"model": "gpt-4o-mini-stream-slow", "stream": True, "input": "Say hello in one short sentence.",
                "store": False}  # fmt: skip
    start = time.perf_counter()
    buffer = b""
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    with client.stream("POST", URL + path, content=orjson.dumps(body), headers=headers) as r:
        if r.status_code != 200:
            return None
        for raw in r.iter_raw():
            buffer += raw
            *events, buffer = buffer.split(b"\n\n")
            if any(_is_token(api, event) for event in events):
                return (time.perf_counter() - start) * 1000
    return None


def _is_token(api: str, event: bytes) -> bool:
    """Whether an SSE event carries the first piece of text: a chat chunk's delta.content, a Responses
    response.output_text.delta."""
    data = next((line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")), b"")
    if not data or data == b"[DONE]":
        return False
    payload = orjson.loads(data)
    if api != "chat":
        return bool(payload.get("type") == "response.output_text.delta" and payload.get("delta"))
    return any((choice.get("delta") or {}).get("content") for choice in payload.get("choices") or ())


def main() -> int:
    # Each round starts with the next API: none is always measured first, after the pause (the machine's speed
    # drifts within a round too).
    runs = [load(APIS[(r + i) % len(APIS)], r) for r in range(1, ROUNDS + 1) for i in range(len(APIS))]
    runs.sort(key=lambda run: (run["round"], APIS.index(run["api"])))
    streams: dict[str, list[float]] = {api: [] for api in ("chat", "responses")}
    with httpx.Client(timeout=30) as client:
        for i in range(STREAM_N + 3):
            for api in streams:  # interleaved, one at a time
                took = first_token(client, api)
                if took is None:
                    print(f"WARNING: a {api} stream failed", file=sys.stderr)
                elif i >= 3:
                    streams[api].append(took)
    result = {
        "runs": runs,
        "first_token_ms_p50": {api: round(statistics.median(v), 3) for api, v in streams.items() if v},
    }
    (RUN_DIR / "api-cost.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print("| round | API | req/s | CPU µs/request | × chat's CPU | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        chat = next(r for r in runs if r["round"] == run["round"] and r["api"] == "chat")
        ratio = run["cpu_us_per_request"] / chat["cpu_us_per_request"]
        print(f"| {run['round']} | {run['api']} | {run['rps']:,} | {run['cpu_us_per_request']} | {ratio:.3f} | "
              f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} |")  # fmt: skip
    # The machine's speed drifts by ±15 % between windows seconds apart: over many short interleaved rounds, the
    # ratio of the sums is the figure to read (ROUNDS=10 DURATION=3), each round's only its spread.
    totals = {}
    for api in APIS:
        mine = [r for r in runs if r["api"] == api]
        totals[api] = sum(r["cpu_s"] for r in mine) / sum(r["requests"] for r in mine)
    result["all_rounds_cpu_us_per_request"] = {api: round(t * 1e6, 1) for api, t in totals.items()}
    (RUN_DIR / "api-cost.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print("all rounds: " + ", ".join(f"{api} {t * 1e6:.1f} µs ({t / totals['chat']:.3f})" for api, t in totals.items()))
    print(f"first token p50 (ms), {STREAM_N} streams each, interleaved: {result['first_token_ms_p50']}")
    return 1 if any(r["errors"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
