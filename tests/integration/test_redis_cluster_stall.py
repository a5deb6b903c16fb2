"""A master of a Redis Cluster that stalls (SIGSTOP) runs, when it resumes, the reservations its callers gave up
on: none of them may take anything, as on one server (tests/unit/state/test_limiter_redis_stall.py). Each master
keeps its own clock, so the limiter keeps a bound for each (limiter_redis.RedisLimiter._reserve_on_master)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from gateway.state.limiter import CONCURRENCY, WINDOW, Check, LimiterUnavailable
from gateway.state.limiter_redis import RedisLimiter
from tests.redis_cluster import Cluster

pytestmark = [pytest.mark.redis]

TIMEOUT_S = 0.1


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    return redis_cluster


def master_serving(cluster: Cluster, key: str) -> int:
    slot = key_slot(key.encode())
    for port in cluster.masters():
        for line in cluster.redis(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                for span in fields[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return port
    raise AssertionError(f"no master serves {key}")


def commands_run(cluster: Cluster, port: int) -> int:
    stats = cluster.redis(port, "INFO", "commandstats")
    return sum(
        int(line.split("calls=")[1].split(",")[0])
        for line in stats.splitlines()
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_time:"))
    )


@pytest.mark.parametrize("seed", range(4))
def test_reservations_given_up_during_a_master_s_stall_take_nothing_on_resuming(cluster: Cluster, seed: int) -> None:
    rng = random.Random(seed)
    tag = f"stall{seed}:{os.getpid()}"
    stalled_check = Check(f"gw:rl:{{{tag}}}:c", rng.choice([WINDOW, CONCURRENCY]), 30, 30, 60_000, 1.0)
    stalled_port = master_serving(cluster, stalled_check.key)
    # A second check on another master (its group admits, and is given back when the stalled one fails), or none.
    other: list[Check] = []
    if rng.random() < 0.5:
        for i in range(1000):
            candidate = Check(f"gw:rl:{{other{seed}:{i}:{os.getpid()}}}:c", WINDOW, 30, 30, 60_000, 1.0)
            if master_serving(cluster, candidate.key) != stalled_port:
                other = [candidate]
                break
    checks = [stalled_check, *other]
    node = next(n for n in cluster.nodes if n.port == stalled_port)
    stalled = rng.randint(1, 4)

    async def run() -> tuple[int, list[float]]:
        limiter = RedisLimiter(cluster.url, timeout_s=TIMEOUT_S)
        admitted = 0
        for _ in range(rng.randint(0, 2)):  # live calls first (the master's clock learnt), or a stall from the start
            admitted += (await limiter.reserve([c.taking(1.0) for c in checks])).ok
        before = commands_run(cluster, stalled_port)
        os.kill(node.process.pid, signal.SIGSTOP)
        try:
            for _ in range(stalled):
                with pytest.raises(LimiterUnavailable):
                    await limiter.reserve([c.taking(1.0) for c in checks])
            await asyncio.sleep(0.05)  # past the margin: the master resumes after its callers gave up
        finally:
            os.kill(node.process.pid, signal.SIGCONT)
        for _ in range(500):  # every stalled call has reached the master and run (or been found stale)
            if commands_run(cluster, stalled_port) >= before + stalled:
                break
            await asyncio.sleep(0.02)
        await limiter.flush()  # what the other master's groups took, given back
        taken = await limiter.peek(checks)
        await limiter.close()
        return admitted, taken

    admitted, taken = asyncio.run(run())
    # What the live calls took, and nothing of the stalled ones (on either master).
    assert taken == pytest.approx([float(admitted)] * len(checks), abs=0.05)
