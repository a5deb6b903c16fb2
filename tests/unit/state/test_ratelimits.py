"""RateLimits: rules to checks on shared counters, budget periods by the injected clock, and usage read without
taking anything (what /admin/usage shows)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import LimitRule, LimitsConfig
from gateway.context import Principal
from gateway.policy.model import Limit
from gateway.state.limiter import BUCKET, BUDGET, CONCURRENCY, REQUESTS, TOKENS, WINDOW, Check
from gateway.state.ratelimits import PREFIX, RateLimits, own_rule
from tests.clock import FakeClock


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def limits(*rules: LimitRule, clock: FakeClock | None = None, **config: object) -> RateLimits:
    clock = clock or FakeClock(epoch=at("2026-12-07T10:00:00"))
    return RateLimits(
        LimitsConfig(rules=list(rules), **config),  # type: ignore[arg-type]
        lease_ms=90_000,
        registry=CollectorRegistry(),
        clock=clock.time,
    )


def checks(made: RateLimits, rule: LimitRule, scope: str = "key", ident: str = "k1") -> dict[str, Check]:
    found: dict[str, Check] = {}
    made.add(found, scope, ident, rule)
    return found


def test_one_counter_per_scope_identity_and_kind():
    made = limits()
    found = checks(made, LimitRule(scope="key", rpm=10, tpm=1000, concurrency=2, budget_usd=5.0, period="day"))
    assert sorted(found) == [
        f"{PREFIX}key:k1:cc",
        f"{PREFIX}key:k1:rpm.b",
        f"{PREFIX}key:k1:tpm.b",
        f"{PREFIX}key:k1:usd:2026-12-07",
    ]
    rpm, tpm = found[f"{PREFIX}key:k1:rpm.b"], found[f"{PREFIX}key:k1:tpm.b"]
    assert (rpm.kind, rpm.header, rpm.cost) == (BUCKET, REQUESTS, 1.0)
    assert (tpm.kind, tpm.header, tpm.cost) == (BUCKET, TOKENS, 0.0)  # the filter sets the estimate
    assert found[f"{PREFIX}key:k1:cc"].kind == CONCURRENCY
    assert found[f"{PREFIX}key:k1:cc"].window_ms == 90_000  # the lease
    budget = found[f"{PREFIX}key:k1:usd:2026-12-07"]
    assert (budget.kind, budget.soft) == (BUDGET, 4.0)  # 80 % by default
    assert budget.window_ms == 14 * 3_600_000  # to the end of the UTC day


def test_the_sliding_window_algorithm_and_the_burst():
    assert (
        checks(limits(algorithm="sliding-window"), LimitRule(scope="team", rpm=10), "team", "t")[
            f"{PREFIX}team:t:rpm.w"
        ].kind
        == WINDOW
    )
    burst = checks(limits(), LimitRule(scope="key", rpm=10, burst=30))[f"{PREFIX}key:k1:rpm.b"]
    assert (burst.limit, burst.capacity) == (10, 30.0)


def test_two_rules_on_one_counter_keep_the_stricter():
    made = limits()
    found: dict[str, Check] = {}
    made.add(found, "key", "k1", LimitRule(scope="key", rpm=10))
    made.add(found, "key", "k1", LimitRule(scope="key", rpm=3))
    made.add(found, "key", "k1", LimitRule(scope="key", rpm=7))
    assert [c.limit for c in found.values()] == [3]


def test_the_month_ends_at_the_next_month_in_utc_and_december_rolls_the_year():
    clock = FakeClock(epoch=at("2026-12-31T23:00:00"))
    made = limits(clock=clock)
    assert made.period("month") == ("2026-12", 3_600_000)
    assert made.period("day") == ("2026-12-31", 3_600_000)
    clock.advance(3_630)
    assert made.period("month") == ("2027-01", 31 * 86_400_000 - 30_000)


def test_own_rule_from_a_key_s_limits_and_a_policy_s_override():
    plain = Principal(name="p")
    assert own_rule(plain) is None
    capped = Principal(name="v", rpm=5, budget_usd=2.0, budget_period="day")
    assert own_rule(capped) == LimitRule(scope="key", rpm=5, budget_usd=2.0, period="day")
    override = Limit(rpm=1, budget_period="month")
    assert own_rule(capped, override) == LimitRule(scope="key", rpm=1, budget_usd=2.0, period="month")
    assert own_rule(plain, Limit(tpm=100)) == LimitRule(scope="key", tpm=100)


@pytest.mark.anyio
async def test_usage_reads_the_counters_a_key_reserves_on_without_taking_anything():
    made = limits(LimitRule(scope="key", rpm=10), LimitRule(scope="key", match="beta", rpm=2))
    found: dict[str, Check] = {}
    made.add(found, "key", "k1", LimitRule(scope="key", rpm=10))
    outcome, _ = await made.reserve(list(found.values()))
    assert outcome.ok
    own = LimitRule(scope="key", budget_usd=3.0)
    usage = await made.usage("key", "k1", own, name="alpha")
    assert [(c.key, period, used) for c, period, used in usage] == [
        (f"{PREFIX}key:k1:rpm.b", "", 1.0),
        (f"{PREFIX}key:k1:usd:2026-12", "month", 0.0),
    ]
    assert [(c.key, used) for c, _, used in await made.usage("key", "k1", None)] == [(f"{PREFIX}key:k1:rpm.b", 1.0)]
    # A rule matching the key by its name applies to its counters (the stricter cap).
    (by_name,) = await made.usage("key", "k1", None, name="beta")
    assert by_name[0].limit == 2
