"""ratelimit without a gateway: real counters (RateLimits on the memory backend, a stepped clock) and fakes for
token counting, prices and events."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import Deployment, LimitRule, LimitsConfig, ModelGroup, Price
from gateway.context import Principal, RequestContext, Usage
from gateway.errors import BudgetExceeded, ClientClosed, RateLimited, UpstreamUnavailable
from gateway.filters.ratelimit import RateLimitFilter
from gateway.pipeline import Reply
from gateway.policy.decision import Decision
from gateway.policy.model import Limit
from gateway.state.ratelimits import RateLimits
from gateway.telemetry.pricing import PriceTable
from tests.clock import FakeClock
from tests.unit.filters.helpers import chat, key, make_ctx

T0 = 1_800_000_000.0  # 2027-01-15, on a clock that moves only when a test advances it
PER_TOKEN = 0.0625  # US dollars, exact in binary
MODELS = {"demo": ModelGroup([Deployment("mock", "demo-1", price=Price(PER_TOKEN * 1e6, PER_TOKEN * 1e6))])}


class Tokens:
    def count_prompt(self, endpoint: str, model: str, body: object) -> int:
        return 4


class Events:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, **attrs: Any) -> None:
        self.emitted.append((event_type, attrs))


def cost(ctx: RequestContext, usage: Usage) -> float:
    return usage.total_tokens * PER_TOKEN


def make(
    *rules: LimitRule, clock: FakeClock | None = None, **config: Any
) -> tuple[RateLimitFilter, RateLimits, Events]:
    clock = clock or FakeClock(epoch=T0)
    limits = RateLimits(
        LimitsConfig(rules=list(rules), **config), lease_ms=60_000, registry=CollectorRegistry(), clock=clock.time
    )
    events = Events()
    filt = RateLimitFilter(
        limits,
        tokens=Tokens(),  # type: ignore[arg-type]
        prices=PriceTable.empty(),
        cost=cost,
        models=MODELS,
        events=events,  # type: ignore[arg-type]
        default_completion_tokens=100,
        trusted_proxies=[],
        registry=CollectorRegistry(),
    )
    return filt, limits, events


async def taken(limits: RateLimits, principal: Principal, own: LimitRule | None = None) -> dict[str, float]:
    """What each of the key's counters holds, by the counter's kind (the end of its key)."""
    return {c.key.rsplit(":", 1)[-1]: used for c, _, used in await limits.usage("key", principal.key_id, own)}


@pytest.mark.anyio
async def test_requests_over_the_rpm_are_refused_with_a_429_and_openai_s_headers():
    filt, _, _ = make(LimitRule(scope="key", rpm=2))
    app = key()
    for remaining in (b"1", b"0"):
        ctx = make_ctx(principal=app)
        assert await filt.on_request(ctx) is None
        assert ctx.limit_headers is not None
        assert (b"x-ratelimit-limit-requests", b"2") in ctx.limit_headers
        assert (b"x-ratelimit-remaining-requests", remaining) in ctx.limit_headers
    refused = make_ctx(principal=app)
    with pytest.raises(RateLimited) as info:
        await filt.on_request(refused)
    assert info.value.status_code == 429
    assert info.value.headers["retry-after-ms"] == "30000"  # one request of 2 a minute comes back in 30 s
    assert "requests per min (RPM) of key id-app" in info.value.message
    assert (b"x-ratelimit-remaining-requests", b"0") in (refused.limit_headers or [])
    other = make_ctx(principal=key("other"))  # each key its own counter
    assert await filt.on_request(other) is None


@pytest.mark.anyio
async def test_a_policy_s_limit_replaces_the_key_s_own_on_the_same_counter():
    clock = FakeClock(epoch=T0)
    filt, _, _ = make(clock=clock)
    app = key(rpm=5)
    strict = Decision(matched=("tight",), limit=Limit(rpm=1))
    first = make_ctx(principal=app)
    first.policy = strict
    assert await filt.on_request(first) is None
    second = make_ctx(principal=app)
    second.policy = strict
    with pytest.raises(RateLimited):
        await filt.on_request(second)
    with pytest.raises(RateLimited) as info:  # without the policy, the key's 5 a minute, on the same bucket
        await filt.on_request(make_ctx(principal=app))
    assert "limit 5" in info.value.message
    clock.advance(12)  # which refills one request in 12 s
    assert await filt.on_request(make_ctx(principal=app)) is None


@pytest.mark.anyio
async def test_tokens_are_reserved_before_and_reconciled_with_the_real_usage_after():
    filt, limits, _ = make(LimitRule(scope="key", tpm=1000))
    app = key()
    ctx = make_ctx(chat("hi", max_tokens=50), principal=app)
    await filt.on_request(ctx)
    assert await taken(limits, app) == {"tpm.b": 54}  # the prompt (4) and the completion it may ask for (50)
    assert ctx.limit_reservation is not None
    ctx.usage = Usage(prompt_tokens=4, completion_tokens=6)
    assert await filt.on_response(ctx, Reply()) is None
    assert await taken(limits, app) == {"tpm.b": 10}
    assert ctx.limit_reservation is None  # settled once
    await filt.on_response(ctx, Reply())
    assert await taken(limits, app) == {"tpm.b": 10}


@pytest.mark.anyio
async def test_a_request_that_failed_before_an_answer_gives_everything_back_unless_its_client_left_mid_call():
    filt, limits, _ = make(LimitRule(scope="key", tpm=1000, concurrency=2))
    app = key()
    failed = make_ctx(principal=app)
    await filt.on_request(failed)
    failed.error = UpstreamUnavailable("down")
    await filt.on_response(failed, Reply(status=502))
    assert await taken(limits, app) == {"tpm.b": 0, "cc": 0}
    left = make_ctx(principal=app)  # default completion reservation: 100
    await filt.on_request(left)
    left.upstream_start_ns = 1  # the upstream may bill it: leaving is no way around a limit
    left.error = ClientClosed()
    await filt.on_response(left, Reply(status=499))
    assert await taken(limits, app) == {"tpm.b": 104, "cc": 0}  # the slot comes back, the estimate stays


@pytest.mark.anyio
async def test_requests_in_flight_are_capped_and_the_slot_returns_when_one_ends():
    filt, _, _ = make(LimitRule(scope="project", concurrency=1))
    first = make_ctx(principal=key())
    await filt.on_request(first)
    with pytest.raises(RateLimited) as info:
        await filt.on_request(make_ctx(principal=key("same-project")))
    assert "requests in flight of project default" in info.value.message
    first.usage = Usage(prompt_tokens=1, completion_tokens=1)
    await filt.on_response(first, Reply())
    assert await filt.on_request(make_ctx(principal=key())) is None


@pytest.mark.anyio
async def test_a_budget_reserves_at_the_dearest_price_warns_past_its_soft_share_and_then_refuses():
    filt, limits, events = make()
    app = key(budget_usd=1.5)  # 80 % soft share: 1.2
    own = LimitRule(scope="key", budget_usd=1.5)
    for _ in range(3):  # 4 prompt + 4 completion tokens at 1/16 $: 0.5 $ each
        assert await filt.on_request(make_ctx(chat("hi", max_tokens=4), principal=app)) is None
    assert [name for name, _ in events.emitted] == ["budget_soft_limit"]  # once, at the third
    assert events.emitted[0][1]["threshold_usd"] == pytest.approx(1.2)
    with pytest.raises(BudgetExceeded) as info:
        await filt.on_request(make_ctx(chat("hi", max_tokens=4), principal=app))
    assert info.value.headers["x-should-retry"] == "false"
    assert (await taken(limits, app, own))["2027-01"] == 1.5


@pytest.mark.anyio
async def test_the_budget_is_settled_at_the_real_cost():
    filt, limits, _ = make()
    app = key(budget_usd=10.0)
    ctx = make_ctx(chat("hi", max_tokens=4), principal=app)
    await filt.on_request(ctx)
    ctx.usage = Usage(prompt_tokens=4, completion_tokens=2)
    await filt.on_response(ctx, Reply())
    assert await taken(limits, app, LimitRule(scope="key", budget_usd=10.0)) == {"2027-01": 6 * PER_TOKEN}


@pytest.mark.anyio
async def test_a_request_larger_than_a_whole_limit_is_told_not_to_retry():
    filt, limits, _ = make(LimitRule(scope="key", tpm=100))
    app = key()
    with pytest.raises(RateLimited) as info:
        await filt.on_request(make_ctx(chat("hi", max_tokens=500), principal=app))
    assert info.value.headers["x-should-retry"] == "false"
    assert info.value.message.startswith("Request too large for the tokens per min (TPM) of key id-app")
    assert await taken(limits, app) == {"tpm.b": 0}  # nothing was reserved


@pytest.mark.anyio
async def test_anonymous_callers_are_limited_by_address_and_never_by_key_rules():
    filt, _, _ = make(LimitRule(scope="key", rpm=1), LimitRule(scope="ip", rpm=1))
    assert await filt.on_request(make_ctx(client_ip="10.0.0.7")) is None
    with pytest.raises(RateLimited) as info:
        await filt.on_request(make_ctx(client_ip="10.0.0.7"))
    assert "of ip 10.0.0.7" in info.value.message
    assert await filt.on_request(make_ctx(client_ip="10.0.0.8")) is None


@pytest.mark.anyio
async def test_the_bucket_refills_with_time():
    clock = FakeClock(epoch=T0)
    filt, _, _ = make(LimitRule(scope="key", rpm=60), clock=clock, algorithm="token-bucket")
    app = key()
    rule_burst = 60
    for _ in range(rule_burst):
        await filt.on_request(make_ctx(principal=app))
    with pytest.raises(RateLimited):
        await filt.on_request(make_ctx(principal=app))
    clock.advance(1.0)  # one request a second comes back
    assert await filt.on_request(make_ctx(principal=app)) is None
