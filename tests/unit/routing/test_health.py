"""The health registry on a clock the test moves: breakers open, cool down and back off, capacity windows roll, and
a breaker shared through the state backend lasts as long in another worker, without a single sleep."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import BreakerConfig, Deployment, RoutingConfig
from gateway.routing.health import HealthRegistry
from gateway.state.memory import MemoryState
from gateway.telemetry.events import Events
from gateway.telemetry.metrics import Metrics
from tests.clock import FakeClock

DEPLOYMENT = Deployment(provider="up", model="m", rpm=2)
ROUTING = RoutingConfig(breaker=BreakerConfig(consecutive_failures=2, cooldown_s=10, max_cooldown_s=30))


def registry(clock: FakeClock, state: MemoryState | None = None) -> HealthRegistry:
    return HealthRegistry(
        [DEPLOYMENT], ROUTING, state or MemoryState(clock=clock.monotonic), Events(Metrics()),
        clock=clock.monotonic, wall=clock.time,
    )  # fmt: skip


@pytest.mark.anyio
async def test_a_breaker_opens_cools_down_and_backs_off_on_the_registrys_clock() -> None:
    clock = FakeClock()
    health = registry(clock)
    dep = health.get(DEPLOYMENT)
    health.failed(dep, "upstream_timeout")
    health.failed(dep, "upstream_timeout")
    assert dep.breaker.state == "open"
    clock.advance(9.999)
    assert not dep.available(health.clock())
    clock.advance(0.002)
    assert dep.available(health.clock())
    assert dep.breaker.allow(health.clock())  # the probe
    health.failed(dep, "upstream_timeout")
    clock.advance(19.999)  # the cooldown doubled
    assert not dep.available(health.clock())
    clock.advance(0.002)
    assert dep.breaker.allow(health.clock())
    health.succeeded(dep)
    assert dep.breaker.state == "closed"
    await asyncio.sleep(0)  # the shared state's tasks


@pytest.mark.anyio
async def test_capacity_is_per_minute_of_the_clock() -> None:
    clock = FakeClock(start=600.0)  # the start of a minute
    health = registry(clock)
    dep = health.get(DEPLOYMENT)
    for _ in range(2):
        dep.started(health.clock())
    assert not dep.available(health.clock())  # rpm 2 taken
    clock.advance(59.9)
    assert not dep.available(health.clock())
    clock.advance(0.2)
    assert dep.available(health.clock())


@pytest.mark.anyio
async def test_a_breaker_opened_in_one_worker_lasts_its_cooldown_in_another() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    one, two = registry(clock, state), registry(clock, state)
    dep = one.get(DEPLOYMENT)
    one.failed(dep, "upstream_unavailable")
    one.failed(dep, "upstream_unavailable")
    for _ in range(3):
        await asyncio.sleep(0)  # the share is sent in the background
    await two.sync()
    other = two.get(DEPLOYMENT)
    assert other.breaker.state == "open"
    clock.advance(9.9)
    assert not other.available(two.clock())
    clock.advance(0.2)
    assert other.available(two.clock())
    await two.sync()  # past its end, the shared breaker opens nothing again
    assert other.available(two.clock())


async def _shared(one: HealthRegistry) -> None:
    for _ in range(3):
        await asyncio.sleep(0)  # the share is sent in the background


@pytest.mark.anyio
async def test_a_reset_in_one_worker_closes_the_breaker_in_every_other() -> None:
    # An operator's reset reaches one replica through a load balancer; the others had the breaker open, by their own
    # failures or from the shared state, and must take the deployment back within a sync.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    one, two, three = registry(clock, state), registry(clock, state), registry(clock, state)
    for worker in (one, three):  # one and three open it on their own failures
        dep = worker.get(DEPLOYMENT)
        worker.failed(dep, "upstream_unavailable")
        worker.failed(dep, "upstream_unavailable")
        await _shared(worker)
    await two.sync()  # two takes it open from the shared state
    assert [w.get(DEPLOYMENT).breaker.state for w in (one, two, three)] == ["open"] * 3
    clock.advance(1)
    await two.reset(DEPLOYMENT.id)
    clock.advance(1)
    for worker in (one, two, three):
        await worker.sync()
    assert [w.get(DEPLOYMENT).breaker.state for w in (one, two, three)] == ["closed"] * 3
    assert all(w.get(DEPLOYMENT).available(w.clock()) for w in (one, two, three))


@pytest.mark.anyio
async def test_a_breaker_opened_after_a_reset_is_not_undone_by_it() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    one, two = registry(clock, state), registry(clock, state)
    await two.reset(DEPLOYMENT.id)  # an old reset, still in the shared state
    clock.advance(1)
    dep = one.get(DEPLOYMENT)
    one.failed(dep, "upstream_unavailable")
    one.failed(dep, "upstream_unavailable")
    await _shared(one)
    clock.advance(1)
    await one.sync()
    await two.sync()
    assert dep.breaker.state == "open"
    assert two.get(DEPLOYMENT).breaker.state == "open"  # taken from one, after the reset


@pytest.mark.anyio
async def test_the_latency_of_a_worker_that_is_gone_leaves_the_shared_average() -> None:
    # Two replicas share their latency averages; one is killed while the deployment was slow. The other's writes
    # keep the shared hash alive, but the dead one's value must not weigh on the average for ever.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    dead, live = registry(clock, state), registry(clock, state)
    dead.succeeded(dead.get(DEPLOYMENT), latency_s=5.0)
    await dead.sync()
    live.succeeded(live.get(DEPLOYMENT), latency_s=0.1)
    await live.sync()
    assert live.get(DEPLOYMENT).latency_s == pytest.approx(2.55)  # both count while both are there
    for _ in range(30):  # the live one goes on syncing, each second, its answers taking 0.1 s
        clock.advance(1)
        live.succeeded(live.get(DEPLOYMENT), latency_s=0.1)
        await live.sync()
    # Had the dead value stayed, the average would have stayed near it (the live one's value is pulled toward it).
    assert live.get(DEPLOYMENT).latency_s == pytest.approx(0.1, abs=0.01)


def skewed(clock: FakeClock, state: MemoryState, ahead_s: float) -> HealthRegistry:
    """A replica whose wall clock is `ahead_s` ahead of the others' (behind when negative)."""
    return HealthRegistry(
        [DEPLOYMENT], ROUTING, state, Events(Metrics()), clock=clock.monotonic, wall=lambda: clock.time() + ahead_s
    )


async def _open(worker: HealthRegistry) -> None:
    dep = worker.get(DEPLOYMENT)
    worker.failed(dep, "upstream_unavailable")
    worker.failed(dep, "upstream_unavailable")
    await _shared(worker)


SKEWS = [-10.0, 0.0, 10.0]


@pytest.mark.anyio
@pytest.mark.parametrize("resetter_skew", SKEWS)
@pytest.mark.parametrize("other_skew", SKEWS)
async def test_a_reset_closes_what_opened_before_it_whatever_the_clocks(
    resetter_skew: float, other_skew: float
) -> None:
    # A reset through a replica whose clock is 10 s behind had left open the breakers opened up to 10 s before it.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    resetter, other = skewed(clock, state, resetter_skew), skewed(clock, state, other_skew)
    await _open(other)
    clock.advance(1)
    await resetter.reset(DEPLOYMENT.id)
    clock.advance(1)
    await other.sync()
    assert other.get(DEPLOYMENT).breaker.state == "closed"
    clock.advance(1)
    await other.sync()  # applied once: the mark does not close it again
    assert other.get(DEPLOYMENT).available(other.clock())


@pytest.mark.anyio
@pytest.mark.parametrize("resetter_skew", SKEWS)
@pytest.mark.parametrize("other_skew", SKEWS)
async def test_a_breaker_opened_after_a_reset_stays_open_whatever_the_clocks(
    resetter_skew: float, other_skew: float
) -> None:
    # A reset through a replica whose clock is 10 s ahead had closed, at every sync for 10 s, the breakers opened
    # after it: the deployment failing again was never kept out meanwhile, on any replica.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    resetter, other, third = (skewed(clock, state, s) for s in (resetter_skew, other_skew, 0.0))
    await resetter.reset(DEPLOYMENT.id)
    await third.sync()  # a replica that saw the mark before the breaker opened again
    clock.advance(1)
    await _open(other)
    for _ in range(3):
        clock.advance(1)
        await other.sync()
        await resetter.sync()
        await third.sync()
        assert other.get(DEPLOYMENT).breaker.state == "open"
    assert resetter.get(DEPLOYMENT).breaker.state == "open"  # taken from other
    assert third.get(DEPLOYMENT).breaker.state == "open"


@pytest.mark.anyio
@pytest.mark.parametrize("live_skew", SKEWS)
async def test_gone_workers_leave_the_latency_hash_and_a_skewed_live_one_stays(live_skew: float) -> None:
    """Many restarts: each worker that is gone leaves its field in the shared hash, which every live write keeps
    alive; they are removed, so the hash holds the live workers only. A live replica whose clock is 10 s behind
    (its values dated 10 s in the past) is counted all the same, and one 10 s ahead is dropped once gone."""
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    observer = registry(clock, state)
    for _ in range(200):  # workers that served, synced once and were killed
        gone = skewed(clock, state, 10.0)
        gone.succeeded(gone.get(DEPLOYMENT), latency_s=5.0)
        await gone.sync()
    live = skewed(clock, state, live_skew)
    for _ in range(30):
        clock.advance(1)
        live.succeeded(live.get(DEPLOYMENT), latency_s=0.1)
        await live.sync()
        observer.succeeded(observer.get(DEPLOYMENT), latency_s=0.1)
        await observer.sync()
    fields = await state.hgetall(f"gw:lat:{DEPLOYMENT.id}")
    assert sorted(fields) == sorted([live.worker, observer.worker])
    assert observer.get(DEPLOYMENT).latency_s == pytest.approx(0.1, abs=0.01)
    assert live.get(DEPLOYMENT).latency_s == pytest.approx(0.1, abs=0.01)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "shared",
    [
        {"brk": {"until": "abc", "level": "x"}},
        {"brk": {"until": "inf", "level": "1"}},
        {"brk": {"until": "nan"}},
        {"lat": {"other": "fast,slow,now"}},
        {"lat": {"other": "inf"}},
    ],
)
async def test_a_value_in_the_shared_state_that_cannot_be_read_opens_nothing_and_stops_nothing(
    shared: dict[str, dict[str, str]],
) -> None:
    # A float("abc") had raised out of sync(): the background task, which only caught StateUnavailable, died, and
    # the worker shared no breaker again until restarted. "inf" had opened the breaker for good.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    for kind, values in shared.items():
        await state.hset(f"gw:{kind}:{DEPLOYMENT.id}", values, ttl_s=60)
    worker = registry(clock, state)
    await worker.sync()
    dep = worker.get(DEPLOYMENT)
    assert dep.breaker.state == "closed"
    assert dep.latency_s == 0.0


@pytest.mark.anyio
@pytest.mark.parametrize("opener_skew", SKEWS)
async def test_a_shared_breaker_lasts_its_cooldown_elsewhere_whatever_the_openers_clock(opener_skew: float) -> None:
    # The opener's wall-clock `until` read on another replica's clock had kept the breaker open 20 s there when
    # the opener was 10 s ahead, and not at all when it was 10 s behind (a 10 s cooldown).
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    opener, other = skewed(clock, state, opener_skew), registry(clock, state)
    await _open(opener)
    clock.advance(1)
    await other.sync()
    dep = other.get(DEPLOYMENT)
    assert dep.breaker.state == "open"
    clock.advance(8.9)
    assert not dep.available(other.clock())
    clock.advance(0.2)
    assert dep.available(other.clock())


@pytest.mark.anyio
async def test_the_shared_breaker_stays_readable_by_the_gateway_before_this_one() -> None:
    # A rolling upgrade runs both versions on one Redis; the one before reads every field of gw:brk:<id> as a
    # number (float(...)), and a value that is not one stops its health sync for good.
    clock = FakeClock()
    state = MemoryState(clock=clock.monotonic)
    worker = registry(clock, state)
    key = f"gw:brk:{DEPLOYMENT.id}"
    await _open(worker)
    written = [await state.hgetall(key)]
    await worker.reset(DEPLOYMENT.id)
    written.append(await state.hgetall(key))
    await _open(worker)
    written.append(await state.hgetall(key))
    for values in written:
        assert all(isinstance(float(value), float) for value in values.values()), values
    assert float(written[1]["reset"]) > 0  # the previous gateway's reset, which it applies as before
    assert float(written[2]["reset"]) == 0  # after an opening: no reset for either version
