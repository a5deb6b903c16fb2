from gateway.config import BreakerConfig
from gateway.routing.breaker import Breaker

CONFIG = BreakerConfig(
    consecutive_failures=3, error_rate=0.5, window_s=10, min_requests=10, cooldown_s=2, max_cooldown_s=5
)


def test_consecutive_failures_open_it_and_a_success_in_between_resets_the_count():
    breaker = Breaker(CONFIG)
    assert breaker.record(False, 0) is None
    assert breaker.record(False, 0) is None
    assert breaker.record(True, 0) is None
    assert breaker.record(False, 0) is None
    assert breaker.record(False, 0) is None
    assert breaker.record(False, 0) == "opened"
    assert breaker.state == "open"
    assert not breaker.allow(1.9)


def test_an_error_rate_over_the_window_opens_it():
    breaker = Breaker(CONFIG)
    for i in range(10):
        transition = breaker.record(i % 2 == 0, i * 0.1)  # alternate: never 3 failures in a row
    assert transition == "opened"


def test_the_error_rate_needs_enough_requests_and_forgets_old_ones():
    breaker = Breaker(CONFIG)
    for i in range(4):
        assert breaker.record(i % 2 == 0, 0) is None  # 50% but only 4 requests
    for i in range(10):
        breaker.record(True, 20 + i * 0.1)  # the old failures left the window
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_and_a_failed_probe_doubles_the_cooldown():
    breaker = Breaker(CONFIG)
    for _ in range(3):
        breaker.record(False, 0)
    assert breaker.cooldown_s() == 2
    assert breaker.available(2.0)
    assert breaker.allow(2.0)  # the probe
    assert not breaker.allow(2.0)  # only one at a time
    assert not breaker.available(2.0)
    assert breaker.record(False, 2.1) == "opened"
    assert breaker.cooldown_s() == 4
    assert not breaker.allow(5.0)
    assert breaker.allow(6.2)
    assert breaker.record(False, 6.2) == "opened"
    assert breaker.cooldown_s() == 5  # capped at max_cooldown_s


def test_a_successful_probe_closes_it_and_resets_the_backoff():
    breaker = Breaker(CONFIG)
    for _ in range(3):
        breaker.record(False, 0)
    assert breaker.allow(2.5)
    assert breaker.record(True, 2.6) == "closed"
    assert breaker.state == "closed"
    assert breaker.cooldown_s() == 2


def test_force_open_from_another_worker():
    breaker = Breaker(CONFIG)
    breaker.force_open(open_until=10.0, level=1)
    assert breaker.state == "open"
    assert not breaker.available(9.9)
    assert breaker.available(10.0)


def test_a_probe_that_ends_without_a_verdict_frees_the_slot_for_the_next_request():
    breaker = Breaker(CONFIG)
    for _ in range(3):
        breaker.record(False, 0)
    assert breaker.allow(2.0)  # the probe: its client leaves before the upstream answers
    assert not breaker.available(2.0)
    breaker.release()
    assert breaker.state == "half-open"
    assert breaker.available(2.0)
    assert breaker.allow(2.0)  # the next request probes
    assert breaker.record(True, 2.1) == "closed"
