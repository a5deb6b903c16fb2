"""Every key the gateway writes, on a real Redis Cluster (three masters, three replicas, started on loopback by
the session's `redis_cluster` fixture): limits exact across many subjects spread over the masters with two
clients, budgets, breakers shared by two gateways, the response cache, the semantic index's stream, and a
master failing over to its replica mid-run with the limits still exact after."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from gateway.cache.backends import RedisBackend
from gateway.cache.entry import Entry
from gateway.config import GatewayConfig, LimitRule, LimitsConfig
from gateway.state.limiter import BUDGET, Check
from gateway.state.ratelimits import RateLimits
from gateway.state.redis import RedisState
from tests.conftest import KEY, running
from tests.integration.helpers import RawUpstream, wait_until
from tests.redis_cluster import Cluster

pytestmark = [pytest.mark.redis]


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    return redis_cluster


def rate_limits(url: str, *rules: LimitRule) -> RateLimits:
    # A generous timeout: a busy machine must not turn a slow answer into per-process limits.
    config = LimitsConfig(backend=url, rules=list(rules), timeout_ms=5000, retry_interval_s=0.2)
    return RateLimits(config, lease_ms=90_000, registry=CollectorRegistry())


def checks_for(limits: RateLimits, key: str, team: str) -> list[Check]:
    """What the ratelimit filter asks for one request of `key` in `team`: one check per rule and subject."""
    found: dict[str, Check] = {}
    for rule in limits.rules:
        limits.add(found, rule.scope, {"key": key, "team": team, "global": "all"}[rule.scope], rule)
    return list(found.values())


async def attempt(limits: RateLimits, key: str, team: str) -> tuple[str, str, bool]:
    outcome, limiter = await limits.reserve(checks_for(limits, key, team))
    assert limiter is limits.failover.primary, "answered by per-process limits: the cluster failed a call"
    return key, team, outcome.ok


def masters_holding(cluster: Cluster, pattern: str) -> set[int]:
    return {p for p in cluster.masters() if cluster.redis(p, "--scan", "--pattern", pattern)}


@pytest.mark.anyio
async def test_limits_are_exact_across_many_subjects_and_two_clients(cluster: Cluster) -> None:
    # Buckets that refill one request a minute: what a burst admits is the burst, however slow the machine.
    rules = [
        LimitRule(scope="key", rpm=1, burst=5),
        LimitRule(scope="team", rpm=1, burst=1000),
        LimitRule(scope="global", rpm=1, burst=100_000),
    ]
    one, two = rate_limits(cluster.url, *rules), rate_limits(cluster.url, *rules)
    try:
        keys = [f"k{i}" for i in range(40)]
        calls = [attempt((one, two)[n % 2], key, f"t{i % 4}") for n in range(8) for i, key in enumerate(keys)]
        results = await asyncio.gather(*calls)
        assert Counter(key for key, _, ok in results if ok) == dict.fromkeys(keys, 5)
        # Each request touched three slots (key, team, global): the counters spread over every master.
        assert len({key_slot(f"gw:rl:{{key:{k}}}:".encode()) for k in keys}) == len(keys)
        assert len(masters_holding(cluster, "gw:rl:{key:*")) == 3

        # A tight team limit over keys with room: exactly its burst, though every request reserved its key's
        # counter first (in parallel, on another master) and gave it back when the team refused.
        tight = [LimitRule(scope="key", rpm=1, burst=100), LimitRule(scope="team", rpm=1, burst=7)]
        three, four = rate_limits(cluster.url, *tight), rate_limits(cluster.url, *tight)
        try:
            calls = [attempt((three, four)[n % 2], f"tk{n % 10}", "tight") for n in range(40)]
            assert sum(ok for _, _, ok in await asyncio.gather(*calls)) == 7
            await asyncio.gather(three.failover.primary.flush(), four.failover.primary.flush())  # type: ignore[union-attr]
            # What the refused requests took of their keys' counters was given back: the keys hold the 7 alone.
            used = [taken for i in range(10) for _, _, taken in await three.usage("key", f"tk{i}", tight[0])]
            assert sum(used) == pytest.approx(7, abs=0.5)
        finally:
            await three.close()
            await four.close()
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_budgets_on_a_cluster(cluster: Cluster) -> None:
    rules = [LimitRule(scope="team", budget_usd=1.0, period="day"), LimitRule(scope="key", rpm=1, burst=100)]
    one, two = rate_limits(cluster.url, *rules), rate_limits(cluster.url, *rules)
    try:
        crossed = 0
        for i in range(3):
            checks = checks_for((one, two)[i % 2], "k1", "t1")
            outcome, limiter = await (one, two)[i % 2].reserve(checks)
            assert outcome.ok
            crossed += len(outcome.soft_crossed)
            budget = next(c for c in checks if c.kind == BUDGET)
            limiter.settle([(budget, 0.4)])  # what the request cost
            await limiter.flush()  # type: ignore[attr-defined]
        assert crossed == 1  # 0.8 of 1.0 spent: the soft threshold fired once, across both clients
        outcome, _ = await two.reserve(checks_for(two, "k1", "t1"))
        assert not outcome.ok  # 1.2 spent
        assert "budget of team t1" in checks_for(two, "k1", "t1")[outcome.failed].label
        (spent,) = [taken for check, _, taken in await one.usage("team", "t1", None) if check.kind == BUDGET]
        assert spent == pytest.approx(1.2)
        assert await two.reset_budgets("team", "t1", None) == [("day", pytest.approx(1.2))]
        await two.failover.primary.flush()  # type: ignore[union-attr]
        outcome, _ = await one.reserve(checks_for(one, "k1", "t1"))
        assert outcome.ok
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_state_on_a_cluster(cluster: Cluster) -> None:
    one, two = RedisState(cluster.url), RedisState(cluster.url)
    try:
        await one.ping()
        for i in range(30):  # breakers, drains and latencies of many deployments: spread over the masters
            await one.hset(f"gw:brk:d{i}", {"state": "open", "until": "5"}, ttl_s=60)
            assert await one.incr(f"gw:n:d{i}", 2, ttl_s=60) == 2
            await one.set(f"gw:drain:d{i}", "1")
        assert len(masters_holding(cluster, "gw:brk:*")) == 3
        assert await two.hgetall("gw:brk:d7") == {"state": "open", "until": "5"}
        assert await two.incr("gw:n:d7", 3, ttl_s=60) == 5
        assert await two.get("gw:drain:d29") == "1"
        fields, left_s = await two.hgetall_ttl("gw:brk:d3")  # a breaker and the time left of its cooldown
        assert fields == {"state": "open", "until": "5"}
        assert left_s is not None
        assert 0 < left_s <= 60
        await two.hdel("gw:brk:d3", ["until"])
        assert await one.hgetall("gw:brk:d3") == {"state": "open"}
        await two.delete("gw:drain:d29")
        assert await one.get("gw:drain:d29") is None
    finally:
        await one.close()
        await two.close()


def test_a_breaker_opened_by_one_gateway_is_respected_by_another(
    tmp_path: Path, raw_upstream: tuple[str, RawUpstream], cluster: Cluster
) -> None:
    from tests.integration.test_routing import ADMIN, chat, routing, toggle_calls
    from tests.servers import gateway_process

    up_url, up = raw_upstream
    overrides: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "k"}},
        "models": {"solo": {"deployments": [{"provider": "up", "model": "toggle"}]}},
        "routing": routing(retries=0, breaker={"consecutive_failures": 2, "cooldown_s": 60, "sync_interval_s": 0.1}),
        "state": {"backend": cluster.url},
        "auth": {"admin_key": ADMIN},
    }
    with (
        gateway_process(tmp_path, name="a", **overrides) as (url_a, _),
        gateway_process(tmp_path, name="b", **overrides) as (url_b, _),
    ):
        up.failing = True
        assert [chat(url_a, "solo").status_code for _ in range(2)] == [500, 500]
        assert chat(url_a, "solo").status_code == 503  # open in A
        before = toggle_calls(up)

        def open_in_b() -> bool:
            listing = httpx.get(f"{url_b}/admin/deployments", headers={"authorization": f"Bearer {ADMIN}"})
            return any(d["id"] == "up/toggle" and d["breaker"] == "open" for d in listing.json()["data"])

        assert wait_until(open_in_b)
        assert chat(url_b, "solo").status_code == 503
        assert toggle_calls(up) == before  # B never called the upstream


@pytest.mark.anyio
async def test_the_response_cache_on_a_cluster(cluster: Cluster) -> None:
    one, two = RedisBackend(cluster.url, timeout_s=5.0), RedisBackend(cluster.url, timeout_s=5.0)
    try:

        def entry(project: str, model: str) -> Entry:
            return Entry(b'{"id": "x"}', "r1", 1.0, project, model, model, 3, 4, 0.01)

        for i in range(60):
            await one.put(f"d{i}", entry(f"p{i % 3}", f"m{i % 2}"), ttl_s=60)
        assert len(masters_holding(cluster, "gw:cache:*")) == 3
        found = await two.get("p1", "m0", "d4")
        assert found is not None
        assert found.project == "p1"
        assert await two.purge(None, None, "d4") == 1
        assert await one.get("p1", "m0", "d4") is None
        assert await two.purge("p0", None, None) == 20  # one project's entries, on every master
        assert await two.purge(None, "m1", None) == 30 - 10  # one model's, less p0's already gone
        assert await one.get("p2", "m0", "d2") is not None
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_the_semantic_index_s_stream_on_a_cluster(cluster: Cluster) -> None:
    from tests.unit.cache.test_semantic_redis import PARAPHRASE, Q, replica, sync_of, until

    one, two = replica(cluster.url), replica(cluster.url)
    try:
        assert await two.lookup("p1", "s", PARAPHRASE, 0.5) is None  # starts two's sync
        await one.add("p1", "s", Q, key="k1", ttl_s=60)
        await until(lambda: sync_of(two).received >= 1)
        match = await two.lookup("p1", "s", PARAPHRASE, 0.5)
        assert match is not None
        assert match.key == "k1"
        assert await one.purge("p1") == 1
        await until(lambda: two.index.entries("p1") == 0)
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_a_master_fails_over_mid_run_and_limits_stay_exact(cluster: Cluster) -> None:
    rules = [LimitRule(scope="key", rpm=1, burst=5), LimitRule(scope="team", rpm=1, burst=100_000)]
    one, two = rate_limits(cluster.url, *rules), rate_limits(cluster.url, *rules)
    try:
        before = [f"old{i}" for i in range(30)]
        results = await asyncio.gather(*(attempt((one, two)[n % 2], k, "t") for n in range(6) for k in before))
        assert Counter(k for k, _, ok in results if ok) == dict.fromkeys(before, 5)
        await asyncio.gather(one.failover.primary.flush(), two.failover.primary.flush())  # type: ignore[union-attr]

        # Requests go on while the master of the team's slot (and of some keys) hands over to its replica.
        slot = key_slot(b"gw:rl:{team:t}:")
        master = next(p for p in cluster.masters() if _serves(cluster, p, slot))
        done = threading.Event()
        failed_over: list[int] = []
        thread = threading.Thread(target=lambda: (failed_over.append(cluster.fail_over(master)), done.set()))
        thread.start()
        during: list[tuple[str, str, bool]] = []
        n = 0
        while not done.is_set():
            during.append(await attempt((one, two)[n % 2], f"during{n}", "t"))
            n += 1
        thread.join()
        assert during
        assert failed_over
        assert failed_over[0] != master
        assert all(ok for _, _, ok in during)  # every fresh key admitted, by the cluster, through the handover
        assert _serves(cluster, failed_over[0], slot)

        # After: what was counted before is still there (the replica had it), and fresh keys admit exactly 5.
        again = await asyncio.gather(*(attempt(one, k, "t") for k in before))
        assert not any(ok for _, _, ok in again)
        after = [f"new{i}" for i in range(30)]
        results = await asyncio.gather(*(attempt((one, two)[n % 2], k, "t") for n in range(7) for k in after))
        assert Counter(k for k, _, ok in results if ok) == dict.fromkeys(after, 5)
    finally:
        await one.close()
        await two.close()


@pytest.mark.anyio
async def test_a_master_killed_mid_run_degrades_as_configured_and_limits_are_exact_after(cluster: Cluster) -> None:
    rules = [LimitRule(scope="key", rpm=1, burst=5)]
    one, two = rate_limits(cluster.url, *rules), rate_limits(cluster.url, *rules)
    try:
        before = [f"old{i}" for i in range(30)]
        results = await asyncio.gather(*(attempt((one, two)[n % 2], k, "t") for n in range(5) for k in before))
        assert all(ok for _, _, ok in results)
        await asyncio.gather(one.failover.primary.flush(), two.failover.primary.flush())  # type: ignore[union-attr]
        victim = cluster.masters()[0]
        replica = cluster.replica_of(victim)
        # Replication is asynchronous: what the master had not passed on when it died would be lost. WAIT makes
        # sure the replica has it all, so that "still refused after" is a claim about the cluster, not luck.
        assert cluster.redis(victim, "WAIT", "1", "10000") == "1"
        cluster.kill(victim)

        # Requests go on, through the outage of its slots (per-process limits: fail open) and the promotion.
        degraded = n = 0
        while cluster.role(replica) != "master":
            limits = (one, two)[n % 2]
            outcome, limiter = await limits.reserve(checks_for(limits, f"during{n}", "t"))
            assert outcome.ok  # a fresh key: admitted, by the cluster or by this process
            degraded += limiter is not limits.failover.primary
            n += 1
        assert degraded > 0  # the dead master's slots failed over to per-process limits, as with one Redis down
        cluster.wait_healthy()

        async def shared_again(limits: RateLimits) -> bool:
            _, limiter = await limits.reserve(checks_for(limits, "probe", "t"))
            return limiter is limits.failover.primary

        for limits in (one, two):
            for _ in range(3000):
                if await shared_again(limits):
                    break
                await asyncio.sleep(0.01)
            assert not limits.failover.degraded
        again = await asyncio.gather(*(attempt(one, k, "t") for k in before))
        assert not any(ok for _, _, ok in again)  # the replica had every count
        after = [f"new{i}" for i in range(30)]
        results = await asyncio.gather(*(attempt((one, two)[n % 2], k, "t") for n in range(7) for k in after))
        assert Counter(k for k, _, ok in results if ok) == dict.fromkeys(after, 5)
    finally:
        await one.close()
        await two.close()
        if "victim" in locals():
            cluster.restart(victim)


def _serves(cluster: Cluster, port: int, slot: int) -> bool:
    for line in cluster.redis(port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2] and "master" in fields[2]:
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return True
    return False


def test_a_gateway_on_a_cluster(make_config: Callable[..., GatewayConfig], cluster: Cluster) -> None:
    config = make_config(
        pipeline=["auth", "ratelimit", "route"],
        state={"backend": cluster.url},
        limits={"backend": cluster.url, "timeout_ms": 5000, "rules": [{"scope": "key", "rpm": 1, "burst": 3},
                                                                      {"scope": "team", "rpm": 1000}]},
    )  # fmt: skip
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with running(config) as (url, _):
        statuses = [
            httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}).status_code
            for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        ready = httpx.get(f"{url}/health/ready").json()
        assert ready["checks"]["state"] == "ok", ready
