"""The memory limiter: the same arithmetic as limits.lua, driven with an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from gateway.filters.ratelimit import format_reset
from gateway.identity.client_address import ClientAddress
from gateway.state.limiter import BUCKET, BUDGET, CONCURRENCY, REQUESTS, TOKENS, WINDOW, Check, Reservation
from gateway.state.limiter_memory import MemoryLimiter


def rpm(limit: int, kind: int = BUCKET, capacity: int | None = None, key: str = "k:rpm") -> Check:
    return Check(key, kind, limit, capacity or limit, 60_000, 1.0, REQUESTS)


def test_token_bucket_admits_the_burst_then_refills_at_the_rate() -> None:
    limiter = MemoryLimiter()
    check = rpm(60, capacity=3)  # one a second, three at once
    assert [limiter.reserve_now([check], now_ms=0).ok for _ in range(4)] == [True, True, True, False]
    refused = limiter.reserve_now([check], now_ms=0)
    assert refused.failed == 0
    assert refused.retry_ms == pytest.approx(1000)
    assert limiter.reserve_now([check], now_ms=999).ok is False
    outcome = limiter.reserve_now([check], now_ms=1000)
    assert outcome.ok
    assert outcome.remaining == [pytest.approx(0)]
    assert outcome.reset_ms == [pytest.approx(3000)]


def test_sliding_window_weights_the_previous_window() -> None:
    limiter = MemoryLimiter()
    check = rpm(10, kind=WINDOW)
    for _ in range(10):
        assert limiter.reserve_now([check], now_ms=30_000).ok
    assert not limiter.reserve_now([check], now_ms=59_999).ok
    # 15 s into the next window, 75 % of the previous 10 still count: 7.5 used, room for 2
    assert limiter.reserve_now([check], now_ms=75_000).ok
    assert limiter.reserve_now([check], now_ms=75_000).ok
    refused = limiter.reserve_now([check], now_ms=75_000)
    assert not refused.ok
    # 7.5 + 2 + 1 > 10: wait until the old share is 7 -> 30 % of the window is gone, i.e. at 78 s
    assert refused.retry_ms == pytest.approx(3000)
    assert limiter.reserve_now([check], now_ms=200_000).ok  # two windows later, nothing is left


def test_all_or_nothing_and_settlement() -> None:
    limiter = MemoryLimiter()
    requests = rpm(100)
    tokens = Check("k:tpm", BUCKET, 1000, 1000, 60_000, 600.0, TOKENS)
    assert limiter.reserve_now([requests, tokens], now_ms=0).ok
    refused = limiter.reserve_now([requests, tokens], now_ms=0)  # 600 more tokens do not fit
    assert (refused.ok, refused.failed) == (False, 1)
    assert limiter.reserve_now([requests], now_ms=0).remaining == [98]  # the refusal took no request
    limiter.settle([(tokens, 100 - 600)], now_ms=0)  # used 100 of the 600 reserved
    small = Check("k:tpm", BUCKET, 1000, 1000, 60_000, 900.0, TOKENS)
    assert limiter.reserve_now([small], now_ms=0).ok
    limiter.settle([(small, 200)], now_ms=0)  # an overshoot is debt: the next request waits for it
    assert limiter.reserve_now([Check("k:tpm", BUCKET, 1000, 1000, 60_000, 1.0, TOKENS)], now_ms=0).ok is False


def test_concurrency_slots_are_released() -> None:
    limiter = MemoryLimiter()
    slot = Check("k:cc", CONCURRENCY, 2, 2, 600_000, 1.0)
    assert [limiter.reserve_now([slot], now_ms=0).ok for _ in range(3)] == [True, True, False]
    limiter.settle([(slot, -1)], now_ms=1)
    assert limiter.reserve_now([slot], now_ms=2).ok
    assert limiter.reserve_now([slot], now_ms=600_003).ok  # a lost slot comes back when its lease lapses


def test_budget_reserves_settles_and_fires_the_soft_threshold_once() -> None:
    limiter = MemoryLimiter()

    def spend(cost: float) -> Check:
        return Check("b:usd:2025-01", BUDGET, 1.0, 1.0, 3_600_000, cost, soft=0.8)

    assert limiter.reserve_now([spend(0.5)], now_ms=0).soft_crossed == []
    first = limiter.reserve_now([spend(0.4)], now_ms=0)
    assert first.soft_crossed == [0]
    assert first.remaining == [pytest.approx(0.1)]
    refused = limiter.reserve_now([spend(0.2)], now_ms=0)
    assert not refused.ok
    assert refused.retry_ms == 3_600_000  # the period's end
    limiter.settle([(spend(0), -0.4)], now_ms=0)  # the second request cost nothing after all
    again = limiter.reserve_now([spend(0.4)], now_ms=0)
    assert again.ok
    assert again.soft_crossed == []  # once per period


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (17.2, "18ms"), (1000, "1s"), (1500, "1.5s"), (360_000, "6m0s"), (3_723_000, "1h2m3s")],
)
def test_reset_is_formatted_like_openai(ms: float, text: str) -> None:
    assert format_reset(ms) == text


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9, 10.0.0.2")]
    assert ClientAddress([]).of("10.0.0.1", headers) == "10.0.0.1"
    assert ClientAddress(["10.0.0.0/8"]).of("192.0.2.1", headers) == "192.0.2.1"  # not from a proxy
    # the rightmost address no trusted proxy vouches for; the forged 6.6.6.6 left of it is ignored
    assert ClientAddress(["10.0.0.0/8"]).of("10.0.0.1", headers) == "203.0.113.9"
    assert ClientAddress(["10.0.0.0/8"]).of("10.0.0.1", [(b"x-forwarded-for", b"junk")]) == "10.0.0.1"


def test_peek_reads_what_each_counter_took_and_changes_nothing() -> None:
    limiter = MemoryLimiter()
    bucket = rpm(60, capacity=10)
    window = rpm(10, kind=WINDOW, key="k:w")
    budget = Check("k:usd", BUDGET, 5.0, 5.0, 3_600_000, 1.5)
    assert limiter.peek_now([bucket, window, budget], now_ms=0) == [0, 0, 0]  # absent: nothing taken
    assert limiter._state == {}  # a read of an absent counter does not create it
    for _ in range(2):
        assert limiter.reserve_now([bucket, window, budget], now_ms=0).ok
    taken = limiter.peek_now([bucket, window, budget], now_ms=1000)
    assert taken == [pytest.approx(1), pytest.approx(2), pytest.approx(3.0)]  # one request refilled in a second
    assert limiter.peek_now([bucket, window, budget], now_ms=1000) == taken


def take(limiter: MemoryLimiter, slot: Check, now_ms: float) -> Check | None:
    """One request's slot: its check as its release gives it (saying when it was taken), or None if refused."""
    checks = [slot]
    outcome = limiter.reserve_now(checks, now_ms=now_ms)
    return Reservation(limiter, checks, outcome.at_ms).release(checks[0]) if outcome.ok else None


def test_slots_a_killed_process_held_come_back_within_two_leases_under_steady_traffic() -> None:
    """Slots never given back (their gateway was killed, their settlement lost) are dropped with their generation
    (one lease each) a lease after it ended, though every request renews the counter's expiry."""
    limiter = MemoryLimiter()
    slot = Check("k:conc", CONCURRENCY, 3, 3, 1_000, 1.0, REQUESTS)
    assert take(limiter, slot, 500)
    assert take(limiter, slot, 500)
    now = 500.0
    while now < 2_000:  # steady traffic, one request at a time, each settled: room for one only
        held = take(limiter, slot, now)
        assert held is not None
        assert held.soft == now
        assert take(limiter, slot, now) is None
        limiter.settle([(held, -1.0)], now_ms=now + 10)
        now += 50
    assert limiter.peek_now([slot], now_ms=2_000) == [0.0]  # the generation of 0-1 s dropped at 2 s
    assert all(take(limiter, slot, 2_000) for _ in range(3))


def test_a_slot_in_use_is_never_dropped_and_a_late_release_takes_no_other() -> None:
    limiter = MemoryLimiter()
    slot = Check("k:conc", CONCURRENCY, 3, 3, 1_000, 1.0, REQUESTS)
    a = take(limiter, slot, 2_900)  # in use across its generation's end
    b = take(limiter, slot, 3_100)
    assert a is not None
    assert b is not None
    limiter.settle([(b, -1.0)], now_ms=3_200)  # taken from the generation b was counted in, not a's
    assert limiter.peek_now([slot], now_ms=3_999) == [1.0]
    assert limiter.peek_now([slot], now_ms=4_000) == [0.0]  # a, a lease old at least: dropped (its gateway died)
    c = take(limiter, slot, 4_100)
    limiter.settle([(a, -1.0)], now_ms=4_200)  # a's release after all, late: its slot is gone already
    assert limiter.peek_now([slot], now_ms=4_300) == [1.0]  # c still counted
    limiter.settle([(c, -1.0)], now_ms=4_400)
    assert limiter.peek_now([slot], now_ms=4_500) == [0.0]

    limiter = MemoryLimiter()
    a = take(limiter, slot, 2_900)
    limiter.settle([(a, -1.0)], now_ms=3_500)  # released in the next generation, from its own
    assert limiter.peek_now([slot], now_ms=3_600) == [0.0]


@settings(max_examples=400)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 10, 100, 250, 400]), st.sampled_from(["take", "release", "leak"]), st.integers(0, 50)
        ),
        min_size=1,
        max_size=80,
    )
)
def test_a_concurrency_count_is_never_below_the_slots_in_use_nor_keeps_a_leaked_one_two_leases(steps) -> None:
    """Any interleaving of requests taking slots, releasing them (late or not) and leaking them (their gateway
    killed), on a clock that moves forward, requests lasting less than a lease: the count is at least the slots in
    use (never admits over the limit) and at most those plus the slots leaked within the last two leases."""
    lease = 1_000
    limiter = MemoryLimiter()
    slot = Check("k:conc", CONCURRENCY, 1_000, 1_000, lease, 1.0, REQUESTS)
    now = 10_000.0
    held: list[tuple[float, Check]] = []  # (taken at, its released form)
    leaked: list[float] = []
    for gap, action, pick in steps:
        now += gap
        # Requests last less than a lease: those that would not have are released now.
        for at, check in [h for h in held if now - h[0] >= lease - 1]:
            held.remove((at, check))
            limiter.settle([(check, -1.0)], now_ms=now)
        if action == "take":
            taken = take(limiter, slot, now)
            assert taken is not None
            held.append((now, taken))
        elif held and action == "release":
            at, check = held.pop(pick % len(held))
            limiter.settle([(check, -1.0)], now_ms=now)
        elif held:
            leaked.append(held.pop(pick % len(held))[0])
        (count,) = limiter.peek_now([slot], now_ms=now)
        assert count >= len(held)
        assert count <= len(held) + sum(1 for at in leaked if now - at < 2 * lease)
