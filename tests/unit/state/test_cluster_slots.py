"""On a Redis Cluster one script call may only touch keys of one hash slot. For every family of keys the gateway
writes, the keys that one call touches share a slot, while different subjects spread over many slots."""

from __future__ import annotations

from redis.crc import key_slot

from gateway.cache.backends import redis_key
from gateway.config import LimitRule
from gateway.state.limiter import Check
from gateway.state.limiter_redis import _by_slot
from gateway.state.ratelimits import PREFIX, counter_prefix
from tests.unit.state.test_ratelimits import limits

EVERY_KIND = LimitRule(scope="key", rpm=10, tpm=1000, concurrency=2, budget_usd=5.0, period="day")
SCOPES = ("key", "user", "team", "project", "model", "global", "ip")


def slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


def test_every_counter_of_one_subject_shares_a_slot_on_a_cluster() -> None:
    made = limits(backend="redis+cluster://h:1")
    for scope in SCOPES:
        for ident in ("k1", "team-x", "gpt-4o", "10.0.0.1", "a:b", "{odd}", "curly}", ""):
            rule = EVERY_KIND if scope in ("key", "team", "project") else LimitRule(scope=scope, rpm=1, tpm=1,
                                                                                       concurrency=1)  # fmt: skip
            found: dict[str, Check] = {}
            made.add(found, scope, ident, rule)
            monthly = LimitRule(scope=scope, budget_usd=1.0) if scope in ("key", "team", "project") else None
            if monthly is not None:
                made.add(found, scope, ident, monthly)
            assert len(found) >= 3
            assert len(slots(list(found))) == 1, (scope, ident, sorted(found))
            assert all(k.startswith(counter_prefix(scope, ident, cluster=True)) for k in found)


def test_subjects_spread_over_the_slots_on_a_cluster() -> None:
    made = limits(backend="redis+cluster://h:1")
    found: dict[str, Check] = {}
    for i in range(200):
        made.add(found, "key", f"k{i}", LimitRule(scope="key", rpm=10))
    assert len(slots(list(found))) > 190  # one slot each, bar a few collisions among 16,384


def test_one_redis_keeps_the_names_of_earlier_versions() -> None:
    found: dict[str, Check] = {}
    limits(backend="redis://h:6379/0").add(found, "key", "k1", EVERY_KIND)
    assert sorted(found) == [f"{PREFIX}key:k1:cc", f"{PREFIX}key:k1:rpm.b", f"{PREFIX}key:k1:tpm.b",
                             f"{PREFIX}key:k1:usd:2026-12-07"]  # fmt: skip
    found.clear()
    memory = limits()
    for scope in SCOPES:
        memory.add(found, scope, "x", LimitRule(scope=scope, rpm=1))
    assert len(slots(list(found))) == 1  # one tag for all: a single Redis takes any mix in one call


def test_a_request_s_checks_are_grouped_by_slot_in_their_order() -> None:
    made = limits(backend="redis+cluster://h:1")
    found: dict[str, Check] = {}
    made.add(found, "key", "k1", LimitRule(scope="key", rpm=10, tpm=100))
    made.add(found, "team", "t1", LimitRule(scope="team", rpm=100, budget_usd=5.0))
    made.add(found, "global", "*", LimitRule(scope="global", rpm=1000))
    checks = list(found.values())
    groups = _by_slot(checks)
    assert sorted(i for g in groups for i in g) == list(range(len(checks)))
    for group in groups:
        assert len(slots([checks[i].key for i in group])) == 1
        assert group == sorted(group)
    assert [len(g) for g in groups] == [2, 2, 1]


def test_the_other_families_touch_one_key_a_call() -> None:
    # state (breakers, drains, latency averages): one key a command or script (RedisState's incr and hset);
    # the response cache: GET and SET of one key, UNLINK grouped by slot; the semantic index: one stream.
    a, b = redis_key("p1", "m", "d1"), redis_key("p2", "m", "d2")
    assert "{" not in a
    assert len(slots([a, b])) == 2
