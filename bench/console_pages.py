"""Server time of the console's pages on a large store: N records over D days, then each page fetched S times.

    .venv/bin/python bench/console_pages.py [--records 1000000] [--days 30] [--samples 30]
                                            [--dsn postgresql://postgres@127.0.0.1:5432/test | --sqlite]

The issue's bar: p95 under 150 ms for the traces list with three filters, a trace, and the spend charts over 30
days. Server time is the gateway's own `x-response-time` header. PostgreSQL runs in a schema of its own, dropped at
the end (--keep leaves it, and --reuse seeds nothing: the schema of a previous --keep run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
import yaml

from gateway.app import build_app
from gateway.config import parse_config
from gateway.server import uvicorn_options
from gateway.store.base import RECORD_COLUMNS, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore

ADMIN = "sk-bench-console-admin"
MODELS = [("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("claude-3-5-haiku", "anthropic"),
          ("gemini-1.5-flash", "gemini"), ("llama-3-70b", "groq")]  # fmt: skip
STATUSES = [200] * 45 + [429, 400, 500, 503, 502]


def record(rng: random.Random, ts: float) -> dict[str, Any]:
    model, provider = MODELS[rng.randrange(len(MODELS))]
    key = rng.randrange(50)  # a key belongs to one project and one team, as virtual keys do
    status = STATUSES[rng.randrange(len(STATUSES))]
    prompt, completion = rng.randrange(20, 4000), rng.randrange(0, 800)
    out: dict[str, Any] = {c: "" for c in RECORD_COLUMNS}
    out.update(
        id=uuid.uuid4().hex, ts=ts, endpoint="chat/completions", key_name=f"key-{key}", key_id=f"vk_{key:04d}",
        project=f"p{key % 20}", team=f"t{key % 8}", user_id=f"u{rng.randrange(1000)}",
        model_requested=model, model_served=model, provider=provider, deployment=f"{provider}/{model}",
        status=status, error_type="" if status < 400 else "upstream_error", stream=rng.random() < 0.5,
        latency_ms=rng.uniform(80, 4000), upstream_ms=rng.uniform(70, 3900), ttfb_ms=rng.uniform(50, 900),
        ttft_ms=None, overhead_ms=rng.uniform(0.3, 3), prompt_tokens=prompt, completion_tokens=completion,
        cached_tokens=0, reasoning_tokens=0, total_tokens=prompt + completion,
        cost_usd=(prompt + 4 * completion) * 1e-7, usage_source="upstream", attempts=1, route_reason="weighted",
        spans=[{"name": n, "start_ms": 0.1 * i, "ms": 0.05} for i, n in enumerate(("auth", "ratelimit", "route"))],
        tags={"env": "bench"}, guardrails=[], metadata={}, content_input=f"user: question {rng.randrange(10**6)}",
        content_output="assistant: an answer",
    )  # fmt: skip
    return out


async def seed(store: Store, count: int, days: float, batch: int = 5000) -> None:
    rng, now = random.Random(17), time.time()
    await store.open()
    try:
        started = time.perf_counter()
        for start in range(0, count, batch):
            rows = [record(rng, now - rng.uniform(0, days * 86400)) for _ in range(min(batch, count - start))]
            await store.write(rows)
        print(f"seeded {count:,} records in {time.perf_counter() - started:.0f} s")
    finally:
        await store.close()


async def analyze(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ANALYZE {schema}.model_cost_logs")
        await conn.execute(f"ANALYZE {schema}.usage_rollups")
    finally:
        await conn.close()


def serve(app: Any, options: dict[str, Any]) -> tuple[str, uvicorn.Server, threading.Thread]:
    """The gateway's own server (its protocol times each answer: x-response-time) on a free loopback port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", server, thread


def sign_in(client: httpx.Client) -> None:
    pre = client.get("/ui/signin").cookies["gw_console_pre"]
    answer = client.post("/ui/signin", data={"csrf": pre, "credential": ADMIN})
    assert answer.status_code == 303, answer.text


def timed(client: httpx.Client, path: str, samples: int) -> str:
    times = []
    for _ in range(samples):
        answer = client.get(path)
        if answer.status_code != 200:  # a store query past telemetry.query_timeout_s is a 503
            return f"status {answer.status_code} after {answer.headers.get('x-response-time')}   {path}"
        times.append(float(answer.headers["x-response-time"].removesuffix("ms")))
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
    return f"p50 {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms   {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--schema", default=f"console_bench_{os.getpid()}")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    url = f"sqlite:///{tmp / 'gateway.db'}" if args.sqlite else f"{args.dsn}?schema={args.schema}"
    store: Store = SQLiteStore(str(tmp / "gateway.db")) if args.sqlite else PostgresStore(url)
    if not args.reuse:
        asyncio.run(seed(store, args.records, args.days))
        if not args.sqlite:  # as autovacuum would soon: without statistics the planner scans (45 ms, not 0.6)
            asyncio.run(analyze(args.dsn, args.schema))
    config = {
        "server": {"access_log": False},
        "providers": {"mock": {"type": "mock"}},
        "models": {"demo": {"deployments": [{"provider": "mock", "model": "demo-1"}]}},
        "auth": {"admin_key": ADMIN},
        "telemetry": {"store": url, "spool_dir": str(tmp / "spool")},
    }
    gateway_config = parse_config(yaml.safe_dump(config), source="bench", env=os.environ, base_dir=".")
    base, server, thread = serve(build_app(gateway_config), uvicorn_options(gateway_config.server))
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            sign_in(client)
            three = "/ui/traces?since=-604800&model=gpt-4o-mini&provider=openai&status_class=2xx"
            first = client.get("/api/v1/traces?limit=1", headers={"authorization": f"Bearer {ADMIN}"}).json()
            pages = [
                "/ui/traces",
                three,
                f"/ui/traces/{first['data'][0]['id']}",
                "/ui/spend",
                "/ui/spend?since=-604800",
                "/ui/spend?since=-2592000",
                "/ui/spend?since=-2592000&group_by=model",
                "/ui/spend?since=-2592000&group_by=key&project=p3",
            ]
            for path in pages:
                client.get(path)  # warm
                print(timed(client, path, args.samples))
            # What the spend page is made of: the analytics API's four kinds over 30 days, one by one.
            client.headers["authorization"] = f"Bearer {ADMIN}"
            for kind in ("costs", "usage", "errors", "performance"):
                print(timed(client, f"/api/v1/analytics/{kind}?since=-2592000&interval=1d", args.samples))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if not args.sqlite and not args.keep:

            async def drop() -> None:
                conn = await asyncpg.connect(args.dsn)
                await conn.execute(f"DROP SCHEMA IF EXISTS {args.schema} CASCADE")
                await conn.close()

            asyncio.run(drop())


if __name__ == "__main__":
    main()
