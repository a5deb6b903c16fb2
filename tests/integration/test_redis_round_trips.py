"""Redis round trips per request with every limit on (rpm, tpm, concurrency, budgets on key, team and project): the
request path makes one, limits.lua's reservation; settlements go in batches from a background task. Counted with
MONITOR on the gateway's Redis database while a gateway process serves numbered requests, one at a time (the worst
case for batching: each settlement is a batch of its own) and then many at once."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import KEY
from tests.integration.helpers import wait_until
from tests.servers import gateway_process
from tests.services import require_redis

pytestmark = pytest.mark.redis
N = 200
# The limits of limited_gateway's rules that apply to each request (key: rpm, tpm, concurrency, budget; team: tpm,
# budget; project: rpm, budget; global: rpm), and those settled after the answer (all but the three rpm).
CHECKED, SETTLED = 9, 6


class Monitor:
    """The commands Redis runs on one database, from a MONITOR connection in a thread, by kind: `reserve` and
    `settle` (limits.lua's modes, its first argument), `in scripts` (what the scripts run inside Redis), `other`
    (the clients' other commands: breaker, drain and latency sync, script loads)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    def _run(self) -> None:
        try:
            with self.client.monitor() as monitor:
                self._ready.set()
                for event in monitor.listen():
                    if int(event.get("db", -1)) != self.db:
                        continue
                    words = str(event["command"]).split()
                    name = words[0].upper() if words else ""
                    kind = "other"
                    if event.get("client_type") == "lua":
                        kind = "in scripts"  # run by a script inside Redis: no round trip of its own
                    elif name == "EVALSHA" and len(words) > 2 and words[2].strip("'\"").isdigit():
                        # (An EVAL carries the script's text, spaces and all: a script's first call, after a
                        # NOSCRIPT, on a Redis that had not seen it; counted as `other`.)
                        numkeys = int(words[2].strip("'\""))
                        mode = words[3 + numkeys].strip("'\"") if len(words) > 3 + numkeys else ""
                        kind = {"r": "reserve", "s": "settle", "p": "peek"}.get(mode, "other")
                        with self._lock:
                            self.counts[f"{kind} keys"] += numkeys
                    with self._lock:
                        self.counts[kind] += 1
        except (redis.ConnectionError, ValueError, OSError):
            return  # closed by __exit__


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[str]:
    redis_url = require_redis()
    run = uuid.uuid4().hex[:8]  # counters of this run's own
    priced = {"provider": "mock", "model": "demo-1", "price": {"input": 0.01, "output": 0.01}}
    overrides: dict[str, Any] = {
        "pipeline": ["auth", "ratelimit", "route"],
        "auth": {"keys": [{"name": f"k{run}", "key": KEY, "project": f"p{run}", "team": f"t{run}"}]},
        "models": {"demo": {"deployments": [priced]}},
        "state": {"backend": redis_url},
        "limits": {
            "backend": redis_url,
            "rules": [
                {"scope": "key", "rpm": 100_000, "tpm": 10_000_000, "concurrency": 1000, "budget_usd": 1000},
                {"scope": "team", "tpm": 10_000_000, "budget_usd": 1000},
                {"scope": "project", "rpm": 100_000, "budget_usd": 1000, "period": "day"},
                {"scope": "global", "rpm": 1_000_000},
            ],
        },
    }
    with gateway_process(tmp_path, **overrides) as (url, _):
        yield url


def requests(url: str, n: int, concurrency: int) -> list[int]:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
    headers = {"authorization": f"Bearer {KEY}"}

    async def go() -> list[int]:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

            async def one() -> int:
                async with gate:
                    return (await client.post("/v1/chat/completions", json=body)).status_code

            return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(go())


def measure(monitor: Monitor, url: str, concurrency: int) -> collections.Counter[str]:
    """The commands of N requests, their settlements included."""
    before = monitor.snapshot()

    def counts() -> collections.Counter[str]:
        now = monitor.snapshot()
        now.subtract(before)
        return now

    assert requests(url, N, concurrency) == [200] * N
    # Settled when each request's checks but the rpm ones are (in fewer calls the more requests finish together).
    assert wait_until(lambda: counts()["settle keys"] >= N * SETTLED, 30), counts()
    return counts()


def test_one_redis_round_trip_on_the_request_path_with_every_limit_on(limited_gateway: str) -> None:
    url = limited_gateway
    assert requests(url, 5, 1) == [200] * 5  # warm: the script loaded, connections made
    with Monitor(require_redis()) as monitor:
        for concurrency in (1, 20):
            started = time.monotonic()
            counts = measure(monitor, url, concurrency)
            took = time.monotonic() - started
            print(f"concurrency {concurrency}: {N} requests in {took:.1f} s; Redis round trips on the request path "
                  f"{counts['reserve'] / N:.2f} a request, settlement calls {counts['settle'] / N:.2f} a request, "
                  f"other commands (breaker, drain and latency sync) {counts['other']}, commands run inside the "
                  f"scripts {counts['in scripts'] / (counts['reserve'] + counts['settle']):.1f} a call "
                  f"({CHECKED} limits checked a request)")  # fmt: skip
            assert counts["reserve"] == N  # one round trip on each request's path, whatever the limits
            assert counts["reserve keys"] == N * CHECKED  # and all of them in it
            assert 0 < counts["settle"] <= N
