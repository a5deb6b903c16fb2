"""A circuit breaker per deployment: a pure state machine, told the time, so that tests need no sleeps.

    closed ──(N consecutive failures, or an error rate over the window)──▶ open
    open ──(cooldown elapsed)──▶ half-open: one probe request at a time
    half-open ──(probe succeeds)──▶ closed          half-open ──(probe fails)──▶ open, cooldown doubled

The cooldown grows by powers of two with each failed probe, up to max_cooldown_s, and resets on recovery.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from gateway.config import BreakerConfig

State = Literal["closed", "open", "half-open"]
Transition = Literal["opened", "closed"] | None


class Breaker:
    __slots__ = ("config", "state", "open_until", "level", "consecutive", "_window", "_probing")

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state: State = "closed"
        self.open_until = 0.0
        self.level = 0  # failed probes since the breaker first opened
        self.consecutive = 0
        self._window: deque[list[float]] = deque()  # [second, requests, failures]
        self._probing = False

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            if now < self.open_until:
                return False
            self.state = "half-open"
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def available(self, now: float) -> bool:
        """Whether allow() would let a request through, without taking the probe slot."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now >= self.open_until
        return not self._probing

    def record(self, ok: bool, now: float) -> Transition:
        self._count(ok, now)
        if ok:
            self.consecutive = 0
            if self.state != "closed":
                self._close()
                return "closed"
            return None
        self.consecutive += 1
        if self.state == "half-open":
            self.level += 1
            self._open(now)
            return "opened"
        if self.state == "closed" and self._tripped():
            self._open(now)
            return "opened"
        return None

    def release(self) -> None:
        """The probe ended without a verdict on the deployment (its client left, or the upstream refused the
        request itself): the probe slot goes to the next request, instead of staying taken for ever."""
        self._probing = False

    def cooldown_s(self) -> float:
        return float(min(self.config.max_cooldown_s, self.config.cooldown_s * 2.0**self.level))

    def _open(self, now: float) -> None:
        self.state = "open"
        self.open_until = now + self.cooldown_s()
        self._probing = False

    def _close(self) -> None:
        self.state = "closed"
        self.level = 0
        self.open_until = 0.0
        self._probing = False
        self._window.clear()

    def force_open(self, open_until: float, level: int) -> bool:
        """Another worker opened this breaker (through the state backend); whether that opened or prolonged it."""
        if open_until <= self.open_until:
            return False
        self.state = "open"
        self.open_until = open_until
        self.level = max(self.level, level)
        self._probing = False
        return True

    def reset(self) -> None:
        self.consecutive = 0
        self._close()

    def _count(self, ok: bool, now: float) -> None:
        second = float(int(now))
        window = self._window
        if window and window[-1][0] == second:
            bucket = window[-1]
        else:
            bucket = [second, 0.0, 0.0]
            window.append(bucket)
        bucket[1] += 1
        if not ok:
            bucket[2] += 1
        while window and window[0][0] <= now - self.config.window_s:
            window.popleft()

    def _tripped(self) -> bool:
        config = self.config
        if self.consecutive >= config.consecutive_failures:
            return True
        requests = sum(b[1] for b in self._window)
        failures = sum(b[2] for b in self._window)
        return requests >= config.min_requests and failures / requests >= config.error_rate
