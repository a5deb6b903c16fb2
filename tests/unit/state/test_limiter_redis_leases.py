"""Concurrency slots on Redis (limits.lua): a slot never given back (its gateway killed with `kill -9`, its
settlement lost with a stalled Redis) comes back within two leases, however busy its subject, since each
reservation renews the counter's expiry; a slot in use is never dropped, and a late release takes no other's.
The memory limiter's twin tests are in test_limiter_memory.py (there, on an explicit clock)."""

from __future__ import annotations

import asyncio
import os
import time

import redis

from gateway.state.limiter import CONCURRENCY, REQUESTS, Check, Reservation
from gateway.state.limiter_redis import RedisLimiter
from tests.services import require_redis

LEASE_MS = 400


def slot_check(name: str) -> Check:
    return Check(f"{{gw:rl}}:lease:{name}:{os.getpid()}:{time.time_ns()}", CONCURRENCY, 3, 3, LEASE_MS, 1.0, REQUESTS)


async def take(limiter: RedisLimiter, slot: Check) -> Check | None:
    checks = [slot]
    outcome = await limiter.reserve(checks)
    return Reservation(limiter, checks, outcome.at_ms).release(checks[0]) if outcome.ok else None


def test_slots_never_given_back_come_back_within_two_leases_under_steady_traffic() -> None:
    url = require_redis()
    slot = slot_check("leaked")

    async def run() -> tuple[list[float], int]:
        limiter = RedisLimiter(url, timeout_s=1.0)
        assert await take(limiter, slot)
        assert await take(limiter, slot)
        leaked_at = time.monotonic()
        while time.monotonic() - leaked_at < 2 * LEASE_MS / 1000 + 0.05:  # steady traffic, each request settled
            held = await take(limiter, slot)
            assert held is not None
            assert held.soft > 0
            limiter.settle([(held, -1.0)])
            await limiter.flush()
            await asyncio.sleep(0.02)
        taken = await limiter.peek([slot])
        admitted = [await take(limiter, slot) for _ in range(4)]
        await limiter.close()
        return taken, sum(a is not None for a in admitted)

    taken, admitted = asyncio.run(run())
    assert taken == [0.0]
    assert admitted == 3


def test_a_release_after_the_slot_was_dropped_takes_no_other() -> None:
    url = require_redis()
    slot = slot_check("late")

    async def run() -> list[list[float]]:
        limiter = RedisLimiter(url, timeout_s=1.0)
        seen = []
        held = await take(limiter, slot)
        assert held is not None
        started = time.monotonic()
        while time.monotonic() - started < 2 * LEASE_MS / 1000 + 0.05:  # others come and go meanwhile
            other = await take(limiter, slot)
            assert other is not None
            limiter.settle([(other, -1.0)])
            await limiter.flush()
            await asyncio.sleep(0.02)
        seen.append(await limiter.peek([slot]))  # held for two leases: taken for a slot whose gateway died
        other = await take(limiter, slot)
        assert other is not None
        limiter.settle([(held, -1.0)])  # its release after all, late: its slot is gone already
        await limiter.flush()
        seen.append(await limiter.peek([slot]))  # the other's still counted
        limiter.settle([(other, -1.0)])
        await limiter.flush()
        seen.append(await limiter.peek([slot]))
        await limiter.close()
        return seen

    assert asyncio.run(run()) == [[0.0], [1.0], [0.0]]


def test_a_slot_released_within_its_lease_is_counted_until_then() -> None:
    url = require_redis()
    client = redis.Redis.from_url(url)
    for _ in range(20):  # requests of 1-60 ms, across generation ends: each counted while held, none after
        slot = slot_check("short")

        async def run(slot: Check = slot) -> list[list[float]]:
            limiter = RedisLimiter(url, timeout_s=1.0)
            held = await take(limiter, slot)
            assert held is not None
            await asyncio.sleep(0.001 + (time.time_ns() % 60) / 1000)
            during = await limiter.peek([slot])
            limiter.settle([(held, -1.0)])
            await limiter.flush()
            after = await limiter.peek([slot])
            await limiter.close()
            return [during, after]

        assert asyncio.run(run()) == [[1.0], [0.0]]
        client.delete(slot.key)
