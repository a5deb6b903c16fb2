"""When to retry: exponential backoff with full jitter, Retry-After honoured, and a retry budget per deployment."""

from __future__ import annotations

import random

from gateway.config import Backoff, RetryBudget


def backoff_delay(retry: int, config: Backoff, retry_after_s: float | None = None) -> float:
    """The wait before retry number `retry` (1, 2, ...): full jitter, at least what Retry-After asks."""
    delay = random.uniform(0, min(config.max_s, config.base_s * 2 ** (retry - 1)))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM providers, and the backoff covers it


class RetryBudgetTracker:
    """Retries may be at most `ratio` of the requests sent to a deployment, plus `min_per_s` a second: during a
    full outage the retries stop growing with the traffic instead of multiplying it."""

    __slots__ = ("config", "tokens", "cap", "_ratio", "_last")

    def __init__(self, config: RetryBudget) -> None:
        self.config = config
        self.tokens = max(1.0, config.min_per_s)  # a fresh deployment may retry its first failure
        self.cap = max(10.0, config.min_per_s * 10)
        self._ratio = config.ratio
        self._last = 0.0

    def deposit(self) -> None:
        """Once per attempt: a plain addition, until the budget is full."""
        tokens = self.tokens + self._ratio
        self.tokens = tokens if tokens < self.cap else self.cap

    def withdraw(self, now: float) -> bool:
        if self._last:
            self.tokens = min(self.cap, self.tokens + (now - self._last) * self.config.min_per_s)
        self._last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
