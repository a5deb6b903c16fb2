"""A Redis that stalls (SIGSTOP) runs, when it resumes, the reservations its callers gave up on: none of them may
take anything (limiter_redis.RedisClock). Fault injection on a private redis-server this test starts and stops,
and the clock's bound as a property: a call answered within its timeout is never stale, whatever the skew."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, strategies as st

from gateway.state.limiter import BUCKET, CONCURRENCY, WINDOW, Check, LimiterUnavailable
from gateway.state.limiter_redis import RedisClock, RedisLimiter
from tests.faults import redis_server
from tests.services import free_port

TIMEOUT_S = 0.1


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    with redis_server(port, tmp_path_factory.mktemp("redis")) as proc:
        yield port, proc


def commands_run(client: redis.Redis) -> int:
    """The limiter's commands Redis has run: its scripts, and TIME (its clock, asked before a first reservation)."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval", "time"))


@pytest.mark.parametrize("seed", range(8))
def test_reservations_given_up_during_a_stall_take_nothing_when_redis_resumes(private_redis, seed):
    port, proc = private_redis
    rng = random.Random(seed)
    client = redis.Redis(port=port)
    kind = rng.choice([BUCKET, WINDOW, CONCURRENCY])
    limit = 1 if kind == BUCKET else 30  # a bucket refills slowly: what it had taken is still there when read
    check = Check(f"{{gw:rl}}:stall:{seed}:{os.getpid()}", kind, limit, 30, 60_000, 1.0)
    stalled = rng.randint(1, 5)
    together = rng.random() < 0.5  # the stalled calls one after another, or all at once

    async def run() -> list[float]:
        limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", timeout_s=TIMEOUT_S)
        admitted = 0
        for _ in range(rng.randint(0, 3)):  # live calls (the clock learns Redis's), or none: a stall from the start
            admitted += (await limiter.reserve([check.taking(1.0)])).ok
        before = commands_run(client)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            calls = [limiter.reserve([check.taking(1.0)]) for _ in range(stalled)]
            if together:
                results = await asyncio.gather(*calls, return_exceptions=True)
            else:
                results = []
                for call in calls:
                    try:
                        results.append(await call)
                    except LimiterUnavailable as exc:
                        results.append(exc)
            assert all(isinstance(r, LimiterUnavailable) for r in results)
            await asyncio.sleep(0.05)  # past the margin: Redis resumes after its callers gave up
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # Every stalled call has reached Redis and run (or been refused as stale) before the counter is read.
        for _ in range(500):
            if commands_run(client) >= before + stalled:
                break
            await asyncio.sleep(0.01)
        assert commands_run(client) >= before + stalled
        taken = await limiter.peek([check])
        await limiter.close()
        return [admitted, *taken]

    admitted, taken = asyncio.run(run())
    assert taken == pytest.approx(admitted, abs=0.05)  # what the live calls took, and nothing of the stalled ones


def test_a_reservation_redis_finds_stale_while_its_caller_waits_is_made_again(private_redis):
    """Redis's clock stepped forward past the bound (here: the bound made from a reply of long ago): the reply says
    stale, the clock learns again and the call is made once more; it takes once."""
    port, _ = private_redis
    check = Check(f"{{gw:rl}}:stepped:{os.getpid()}", WINDOW, 30, 30, 60_000, 1.0)

    async def run() -> tuple[bool, list[float], int]:
        limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", timeout_s=TIMEOUT_S)
        await limiter.reserve([check.taking(1.0)])
        limiter._clock.base -= 3_600_000  # as if Redis's clock had jumped an hour since
        outcome = await limiter.reserve([check.taking(1.0)])
        taken = await limiter.peek([check])
        learned = int(limiter._clock.stale_after(time.monotonic()).split(b"\r\n")[1])
        await limiter.close()
        return outcome.ok, taken, learned

    ok, taken, learned = asyncio.run(run())
    assert ok
    assert taken == pytest.approx([2.0], abs=0.01)
    assert abs(learned - time.time() * 1000) < 60_000


@given(
    offset_ms=st.floats(-1e9, 1e9),
    calls=st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=20),
)
def test_a_call_answered_within_its_timeout_is_never_stale(offset_ms, calls):
    """Redis's clock = the local one + any offset (floored to the ms, as TIME); calls sent at increasing times, each
    run by Redis at any moment from its send to its timeout: none is found stale."""
    timeout_s = 0.25
    clock = RedisClock(timeout_s)
    sent = 1000.0
    for gap, run_at, _ in calls:
        sent += gap
        ran = sent + run_at * timeout_s
        redis_now = int((ran * 1000 + offset_ms) // 1)
        stale_after = int(clock.stale_after(sent).split(b"\r\n")[1])
        assert stale_after == 0 or redis_now <= stale_after
        clock.saw(redis_now, sent)
