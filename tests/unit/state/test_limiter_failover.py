"""The Redis failover on a clock the test moves: per-process limits while Redis is down, Redis again after
`retry_interval_s`, and the memory limiter's buckets on the same injected time."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.state.limiter import BUCKET, REQUESTS, Check, LimiterUnavailable, Outcome
from gateway.state.limiter_failover import Failover
from gateway.state.limiter_memory import MemoryLimiter
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio


class FlakyRedis:
    name = "redis"

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def reserve(self, checks: list[Check]) -> Outcome:
        self.calls += 1
        if self.down:
            raise LimiterUnavailable("redis: connection refused")
        return Outcome(ok=True, remaining=[1.0] * len(checks), reset_ms=[0.0] * len(checks))

    async def peek(self, checks: list[Check]) -> list[float]:
        return [0.0] * len(checks)

    def settle(self, items: list[tuple[Check, float]]) -> None:
        pass

    async def close(self) -> None:
        pass


def check() -> Check:
    return Check("k:rpm.b", BUCKET, 60, 2, 60_000, 1.0, REQUESTS)


def failover(primary: FlakyRedis, clock: FakeClock) -> Failover:
    registry = CollectorRegistry()
    return Failover(
        primary, fail_open=True, retry_interval_s=2.0, clock=clock.monotonic,
        errors=Counter("errors", "", registry=registry), degraded=Gauge("degraded", "", registry=registry),
        local=MemoryLimiter(clock=clock.time),
    )  # fmt: skip


async def test_redis_is_tried_again_only_after_the_retry_interval() -> None:
    clock, redis = FakeClock(), FlakyRedis()
    limits = failover(redis, clock)
    redis.down = True
    outcome, used = await limits.reserve([check()])
    assert (outcome.ok, used, limits.degraded) == (True, limits.local, True)
    redis.down = False
    clock.advance(1.999)
    _, used = await limits.reserve([check()])
    assert used is limits.local  # still on per-process limits, however fast or slow the calls
    assert redis.calls == 1
    clock.advance(0.002)
    _, used = await limits.reserve([check()])
    assert (used, limits.degraded, redis.calls) == (redis, False, 2)


async def test_the_local_bucket_refills_on_the_injected_clock() -> None:
    clock, redis = FakeClock(), FlakyRedis()
    limits = failover(redis, clock)
    redis.down = True
    results = [(await limits.reserve([check()]))[0].ok for _ in range(3)]
    assert results == [True, True, False]  # a burst of 2, one a second
    clock.advance(0.999)
    assert not (await limits.reserve([check()]))[0].ok
    clock.advance(0.002)
    assert (await limits.reserve([check()]))[0].ok
