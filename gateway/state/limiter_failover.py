"""Redis first, per-process memory limits while it is unreachable (fail open), or 503s (fail closed).

One log line per transition and a gauge that says which mode the process is in. After a failure the process stays
on memory for `retry_interval_s` and then tries Redis again with the next request: it recovers on its own.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge

from gateway.errors import ServiceUnavailable
from gateway.state.limiter import Check, Limiter, LimiterUnavailable, Outcome
from gateway.state.limiter_memory import MemoryLimiter
from gateway.types import Clock

logger = logging.getLogger("gateway.limits")


class Failover:
    def __init__(
        self,
        primary: Limiter | None,
        *,
        fail_open: bool,
        retry_interval_s: float,
        errors: Counter,
        degraded: Gauge,
        clock: Clock = time.monotonic,
        local: MemoryLimiter | None = None,
    ) -> None:
        self.primary = primary
        self.local = local or MemoryLimiter()
        self.clock = clock
        self.fail_open = fail_open
        self.retry_interval_s = retry_interval_s
        self._errors = errors
        self._degraded_gauge = degraded
        self.degraded = False
        self._retry_at = 0.0

    async def reserve(self, checks: list[Check]) -> tuple[Outcome, Limiter]:
        primary = self.primary
        if primary is None:
            return self.local.reserve_now(checks), self.local
        if not self.degraded or self.clock() >= self._retry_at:
            try:
                outcome = await primary.reserve(checks)
            except LimiterUnavailable as exc:
                self._failed(exc)
            else:
                if self.degraded:
                    self.degraded = False
                    self._degraded_gauge.set(0)
                    logger.warning("ratelimit backend %s is back: limits are shared again", primary.name)
                return outcome, primary
        if not self.fail_open:
            raise ServiceUnavailable("Rate limits cannot be checked now.", code="ratelimit_unavailable")
        return self.local.reserve_now(checks), self.local

    async def peek(self, checks: list[Check]) -> list[float]:
        """The counters that admission uses right now: Redis's, or this process's own while degraded."""
        primary = self.primary
        if primary is not None and (not self.degraded or self.clock() >= self._retry_at):
            try:
                return await primary.peek(checks)
            except LimiterUnavailable as exc:
                self._failed(exc)
        if primary is not None and not self.fail_open:
            raise ServiceUnavailable("Usage cannot be read now: the rate-limit backend is unreachable.")
        return self.local.peek_now(checks)

    def backend_error(self) -> None:
        self._errors.inc()

    def _failed(self, exc: Exception) -> None:
        self.backend_error()
        self._retry_at = self.clock() + self.retry_interval_s
        if not self.degraded:
            self.degraded = True
            self._degraded_gauge.set(1)
            mode = "per-process limits" if self.fail_open else "refusing requests (503)"
            logger.error("ratelimit backend unreachable, %s until it answers: %s", mode, exc)

    async def close(self) -> None:
        if self.primary is not None:
            await self.primary.close()
        await self.local.close()
