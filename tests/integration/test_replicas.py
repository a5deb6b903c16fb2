"""Three gateway replicas behind Debian's nginx (round robin), sharing one Redis database and one PostgreSQL schema,
as operators run them (issue 19): load survives a replica's kill -9 and restart, and every answer it gave more than
the README's crash window before the kill is recorded (with its store up, or cut and its records in its spool until
the restart); a key's rate limit holds across the three; a breaker opened on one stops traffic on all, and a reset
through the balancer brings it back on all; a policy saved through one is in force on all; any replica's API reads
every trace.

Each replica is a `gateway serve` process on a port of its own (tests/replicas.py), nginx runs from a config in the
test's folder (tests/nginx.py), and the upstream is the built-in mock plus, for the breaker, the recording upstream
of tests/servers.py. Intervals are short so that the test is quick; every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import KEY, merge
from tests.faults import FaultyProxy
from tests.integration.helpers import wait_until
from tests.nginx import require_nginx, round_robin, served_by
from tests.replicas import Load, Replica
from tests.servers import Upstream, serve
from tests.services import drop_schema, postgres_fetch, require_postgres, require_redis

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

ADMIN = "sk-admin-replicas"
LIMITED = "sk-limited-replicas"
RPM = 12  # the limited key's requests a minute, across all replicas
SYNC_S = 0.5  # routing.breaker.sync_interval_s
POLL_S = 0.5  # policies.poll_interval_s
# README, "Nothing lost": a kill -9 loses only the records answered in the last ~1.5 s (spill_after_ms plus two
# flush_interval_ms); test_crash_window.py holds it to 3 s, and so does this test.
WINDOW_S = 3.0


@dataclass
class Cluster:
    lb: str  # nginx's URL
    replicas: list[Replica]
    upstream: Upstream
    dsn: str
    schema: str
    run: str  # in key and provider names: this run's Redis keys are its own, whatever an earlier run left
    victim_store: FaultyProxy  # between replicas[1] and PostgreSQL

    @property
    def flaky(self) -> str:
        return f"up{self.run}/toggle"  # the deployment the breaker test fails

    def numbered(self, run: str) -> dict[int, str]:
        """The records of a Load's run in PostgreSQL: n -> record id (and a failure if one n has two)."""
        sql = f"SELECT metadata->>'n' AS n, id FROM {self.schema}.model_cost_logs WHERE metadata->>'run' = '{run}'"
        rows = postgres_fetch(self.dsn, sql)
        found = {int(r["n"]): str(r["id"]) for r in rows}
        assert len(found) == len(rows), "a record written twice"
        return found


def admin(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat(lb: str, key: str = KEY, model: str = "demo", **metadata: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "metadata": metadata}
    return httpx.post(f"{lb}/v1/chat/completions", json=body, headers=admin(key), timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_nginx()
    redis_url = require_redis()
    dsn = require_postgres()
    run = uuid.uuid4().hex[:8]
    schema = f"gw_replicas_{run}"
    tmp_path = tmp_path_factory.mktemp("replicas")
    upstream = Upstream()
    with serve(upstream.app()) as up_url, FaultyProxy.before(dsn) as store_proxy:
        overrides: dict[str, Any] = {
            "pipeline": ["auth", "policy", "ratelimit", "route"],
            "auth": {
                "admin_key": ADMIN,
                "keys": [
                    {"name": "tester", "key": KEY, "project": "p1", "team": "t1"},
                    {"name": f"limited-{run}", "key": LIMITED, "project": "p1"},
                ],
            },
            "state": {"backend": redis_url},
            "limits": {"backend": redis_url, "rules": [{"scope": "key", "match": f"limited-{run}", "rpm": RPM}]},
            "policies": {"paths": [], "poll_interval_s": POLL_S},
            "routing": {
                # No retries: a request that meets the failing deployment fails, so that each one counts.
                "retries": 0,
                "breaker": {"consecutive_failures": 3, "cooldown_s": 600, "sync_interval_s": SYNC_S},
            },
            "providers": {f"up{run}": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-upstream"}},
            "models": {
                "flaky": {
                    "strategy": "round-robin",
                    "deployments": [
                        {"provider": f"up{run}", "model": "toggle"},
                        {"provider": "mock", "model": "steady"},
                    ],
                },
            },
            "telemetry": {"store": f"{dsn}?schema={schema}", "flush_interval_ms": 200},
        }
        # The second replica, the kill test's victim, reaches PostgreSQL through a proxy that the test can cut.
        victim = merge(overrides, {"telemetry": {"store": f"{store_proxy.url(dsn)}?schema={schema}"}})
        replicas = [Replica(tmp_path, f"replica{i}", victim if i == 1 else overrides) for i in range(3)]
        try:
            for replica in replicas:
                replica.start()
            with round_robin(tmp_path / "nginx", [r.port for r in replicas]) as lb:
                yield Cluster(lb, replicas, upstream, dsn, schema, run, store_proxy)
        finally:
            for replica in replicas:
                replica.stop()
            drop_schema(dsn, schema)


def telemetry(replica: Replica) -> dict[str, Any]:
    answer = httpx.get(f"{replica.url}/api/v1/telemetry/status", headers=admin(), timeout=10)
    answer.raise_for_status()
    return dict(answer.json())


def spooled(replica: Replica) -> int:
    return int(telemetry(replica)["sinks"]["store"]["spooled"])


def settled(replica: Replica) -> bool:
    """Nothing of this replica's records waits, in memory or in its spool."""
    status = telemetry(replica)
    store = status["sinks"]["store"]
    return bool(status["records"]["queued"] == 0 and store["queued"] == 0 and store["spooled"] == 0)


@pytest.mark.parametrize("victim_store", ["up", "down"])
def test_load_goes_on_through_a_kill_9_and_every_answer_outside_the_window_is_recorded(
    cluster: Cluster, victim_store: str
) -> None:
    """The victim is killed with its store up (its records in memory or written), or gone for seconds (its
    records in its spool, which it replays once started again)."""
    run = f"load-{victim_store}-{cluster.run}"
    victim = cluster.replicas[1]

    def answered_before(replica: Replica, since: float) -> int:  # older than the window, with a second to spare
        return load.by_replica(since, time.monotonic() - WINDOW_S - 1)[replica.address]

    with Load(cluster.lb, KEY, run) as load:
        started = time.monotonic()
        assert wait_until(lambda: all(answered_before(r, 0.0) >= 20 for r in cluster.replicas), 120, 0.05)
        cut_at = time.monotonic()
        if victim_store == "down":
            cluster.victim_store.cut()
            assert wait_until(lambda: answered_before(victim, cut_at) >= 20 and spooled(victim) > 0, 120, 0.05)
        victim.kill9()
        killed_at = time.monotonic()  # it is dead (reaped); an answer it sent may still be on its way to a client
        # The load goes on: the two others answer, nginx skipping the dead one.
        assert wait_until(lambda: sum(load.by_replica(killed_at).values()) >= 100, 120, 0.05), load.statuses
        restarted_at = time.monotonic()
        assert load.by_replica(killed_at + 1, restarted_at)[victim.address] == 0
        cluster.victim_store.restore()
        in_store_before_restart = set(cluster.numbered(run))
        victim.start()  # same port, same spool: what it had spooled is replayed
        assert wait_until(lambda: load.by_replica(restarted_at)[victim.address] >= 20, 120, 0.05), load.by_replica(
            restarted_at
        )
    answers = list(load.answers)
    print(f"statuses {dict(load.statuses)}; 200s by replica {dict(load.by_replica())}")
    # Only requests in flight on the victim may fail (nginx passes a POST on only when it could not send it).
    failed = sum(count for status, count in load.statuses.items() if status != 200)
    assert failed <= 3 * 3, load.statuses  # at most what three client threads had in flight, a few times over

    assert wait_until(lambda: all(settled(r) for r in cluster.replicas), 120, 0.2)
    # May be lost: what the victim answered within the window before the kill (its records were in memory).
    at_risk = {a.n for a in answers if a.replica == victim.address and killed_at - WINDOW_S < a.at < restarted_at}
    wanted = {a.n for a in answers} - at_risk
    missing = lambda: wanted - set(cluster.numbered(run))  # noqa: E731
    assert wait_until(lambda: not missing(), 60, 0.5), sorted(missing())
    recorded = cluster.numbered(run)
    assert all(recorded[a.n] == a.record_id for a in answers if a.n in recorded)  # the ids the clients were given
    lost = sorted(killed_at - a.at for a in answers if a.n in at_risk and a.n not in recorded)
    # With its store gone, what the victim answered after the cut reached PostgreSQL after its restart, from its spool.
    replayed = {a.n for a in answers if a.replica == victim.address and cut_at < a.at < killed_at} & set(recorded)
    if victim_store == "down":
        assert replayed
        assert not replayed & in_store_before_restart
    print(f"store {victim_store}: {len(answers)} answered, {len(wanted)} outside the window all recorded "
          f"({len(replayed - in_store_before_restart)} from the victim's spool after its restart); of the "
          f"{len(at_risk)} the victim answered in the {WINDOW_S:g} s before its kill (the load ran "
          f"{killed_at - started:.1f} s before it), {len(lost)} lost, answered {lost[:1]}-{lost[-1:]} s "
          "before it")  # fmt: skip


def test_a_keys_rpm_admits_exactly_that_many_across_the_replicas(cluster: Cluster) -> None:
    async def burst(n: int) -> list[httpx.Response]:
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
            calls = [
                client.post(f"{cluster.lb}/v1/chat/completions", json=body, headers=admin(LIMITED)) for _ in range(n)
            ]
            return list(await asyncio.gather(*calls))

    started = time.monotonic()
    answers = asyncio.run(burst(4 * RPM))
    took = time.monotonic() - started
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert {served_by(a) for a in answers} == {r.address for r in cluster.replicas}  # all three took a share
    admitted = statuses.count(200)
    # The bucket holds RPM and refills RPM a minute: a burst that took longer than 60/RPM s may see one more.
    assert RPM <= admitted <= RPM + int(took * RPM / 60), (admitted, took)
    if took < 60 / RPM:
        assert admitted == RPM
    print(f"{admitted} of {len(answers)} admitted in {took:.2f} s, by replica:",
          {r.name: sum(1 for a in answers if a.status_code == 200 and served_by(a) == r.address)
           for r in cluster.replicas})  # fmt: skip


def deployment(replica: Replica, deployment_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{replica.url}/admin/deployments", headers=admin(), timeout=10)
    answer.raise_for_status()
    (found,) = [d for d in answer.json()["data"] if d["id"] == deployment_id]
    return dict(found)


def test_a_breaker_opened_on_one_replica_stops_the_traffic_of_all(cluster: Cluster) -> None:
    first, *others = cluster.replicas
    up = cluster.upstream
    up.failing = True
    try:
        # The deployment fails through the first replica, asked directly, until its breaker opens.
        def opened_on_first() -> bool:
            chat(first.url, model="flaky")
            return deployment(first, cluster.flaky)["breaker"] == "open"

        assert wait_until(opened_on_first, 60, 0.0)
        opened_at = time.monotonic()
        seen: dict[str, float] = {}

        def shared() -> bool:
            for replica in others:
                if replica.name not in seen and deployment(replica, cluster.flaky)["breaker"] == "open":
                    seen[replica.name] = time.monotonic() - opened_at
            return len(seen) == len(others)

        assert wait_until(shared, 30, 0.05), seen
        print(f"breaker open on the others after {seen} s (sync_interval_s {SYNC_S})")
        # No replica sends it anything now: every request through nginx is served by the other deployment.
        calls_before = sum(1 for r in up.requests if r["body"]["model"] == "toggle")
        answers = [chat(cluster.lb, model="flaky") for _ in range(30)]
        assert [a.status_code for a in answers] == [200] * 30
        assert {a.json()["model"] for a in answers} == {"steady"}
        assert {served_by(a) for a in answers} == {r.address for r in cluster.replicas}
        assert sum(1 for r in up.requests if r["body"]["model"] == "toggle") == calls_before

        # The upstream is back and an operator resets the breaker through the load balancer, so on one replica:
        # every replica takes the deployment back.
        up.failing = False
        reset = httpx.post(f"{cluster.lb}/admin/deployments/{cluster.flaky}/reset", headers=admin(), timeout=10)
        assert reset.status_code == 200, reset.text
        reset_at = time.monotonic()
        closed: dict[str, float] = {}

        def all_closed() -> bool:
            for replica in cluster.replicas:
                if replica.name not in closed and deployment(replica, cluster.flaky)["breaker"] == "closed":
                    closed[replica.name] = time.monotonic() - reset_at
            return len(closed) == len(cluster.replicas)

        assert wait_until(all_closed, 30, 0.05), closed
        print(f"breaker reset through {served_by(reset)}, closed on all after {closed} s")
    finally:
        up.failing = False
        for replica in cluster.replicas:  # the breaker closed again, for whatever runs after
            httpx.post(f"{replica.url}/admin/deployments/{cluster.flaky}/reset", headers=admin(), timeout=10)


def test_a_policy_saved_through_one_replica_is_in_force_on_all_within_its_poll(cluster: Cluster) -> None:
    phase = f"policy-{cluster.run}"
    policy = {
        "name": f"deny-{cluster.run}",
        "match": {"metadata.phase": phase},
        "actions": {"deny": {"status": 403, "code": "replica_policy", "message": "denied on every replica"}},
    }
    for replica in cluster.replicas:
        assert chat(replica.url, phase=phase).status_code == 200
    saved = httpx.post(f"{cluster.replicas[0].url}/api/v1/policies", json={"policy": policy}, headers=admin())
    assert saved.status_code == 201, saved.text
    saved_at = time.monotonic()
    seen: dict[str, float] = {}

    def in_force() -> bool:
        for replica in cluster.replicas:
            if replica.name not in seen and chat(replica.url, phase=phase).status_code == 403:
                seen[replica.name] = time.monotonic() - saved_at
        return len(seen) == len(cluster.replicas)

    try:
        assert wait_until(in_force, 60, 0.05), seen
        print(f"policy in force after {seen} s (poll_interval_s {POLL_S})")
        denied = chat(cluster.lb, phase=phase)
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "replica_policy"
        assert chat(cluster.lb, phase="other").status_code == 200  # it matches what it names, nothing else
    finally:
        httpx.delete(f"{cluster.replicas[0].url}/api/v1/policies/{policy['name']}", headers=admin(), timeout=10)


def test_any_replicas_api_returns_the_traces_of_all(cluster: Cluster) -> None:
    run = f"traces-{cluster.run}"
    answers = [chat(cluster.lb, run=run, n=str(n)) for n in range(30)]
    assert [a.status_code for a in answers] == [200] * 30
    by_replica = {r.address: [a.headers["x-gateway-request-id"] for a in answers if served_by(a) == r.address]
                  for r in cluster.replicas}  # fmt: skip
    assert all(by_replica.values()), by_replica  # round robin: each replica answered some
    every = {i for ids in by_replica.values() for i in ids}
    assert wait_until(lambda: all(settled(r) for r in cluster.replicas), 60, 0.2)

    def listed(replica: Replica) -> set[str]:
        query = {"metadata": f"run:{run}", "limit": "1000", "since": "-3600"}
        page = httpx.get(f"{replica.url}/api/v1/traces", params=query, headers=admin(), timeout=10).json()
        return {row["id"] for row in page["data"]}

    for replica in cluster.replicas:
        assert wait_until(functools.partial(lambda r: listed(r) == every, replica), 60, 0.2), replica.name
        for ids in by_replica.values():  # one record of each replica, read by id through this one
            trace = httpx.get(f"{replica.url}/api/v1/traces/{ids[0]}", headers=admin(), timeout=10)
            assert trace.status_code == 200, trace.text
            assert trace.json()["metadata"]["run"] == run
