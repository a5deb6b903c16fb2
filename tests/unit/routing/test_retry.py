from gateway.config import Backoff, RetryBudget
from gateway.routing.retry import RetryBudgetTracker, backoff_delay, retry_after_seconds


def test_full_jitter_stays_within_the_exponential_bound():
    config = Backoff(base_s=0.1, max_s=1.0)
    for retry, bound in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0)):
        delays = [backoff_delay(retry, config) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.5  # jittered across the range, not fixed


def test_retry_after_is_a_floor():
    assert backoff_delay(1, Backoff(base_s=0.1, max_s=1.0), retry_after_s=2.0) == 2.0
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_seconds(None) is None


def test_the_budget_allows_a_share_of_requests_plus_a_floor_per_second():
    budget = RetryBudgetTracker(RetryBudget(ratio=0.1, min_per_s=0.0))
    allowed = 0
    for _ in range(100):
        budget.deposit()
        if budget.withdraw(now=0.0):
            allowed += 1
    assert 9 <= allowed <= 11  # 10% of 100 requests, plus the first one
    timed = RetryBudgetTracker(RetryBudget(ratio=0.0, min_per_s=2.0))
    assert timed.withdraw(0.0)
    assert timed.withdraw(0.0)
    assert not timed.withdraw(0.1)
    assert timed.withdraw(1.0)  # two a second come back
