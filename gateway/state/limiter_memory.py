"""Limits in this process: reserve.lua's semantics in Python, with no await and no lock (one event loop)."""

from __future__ import annotations

import math
import time

from gateway.state.limiter import BUCKET, BUDGET, CONCURRENCY, WINDOW, Check, Outcome
from gateway.types import Clock

# A counter untouched this long is swept, so that per-IP or per-user state cannot grow without end.
_SWEEP_EVERY = 10_000


class MemoryLimiter:
    name = "memory"

    def __init__(self, clock: Clock = time.time) -> None:
        # Wall-clock time, as Redis's TIME in limits.lua: a process that falls back to memory keeps the same windows.
        self.clock = clock
        # key -> [a, b, c, expires_ms]; the meaning of a, b, c depends on the kind (see _level and _store)
        self._state: dict[str, list[float]] = {}
        self._ops = 0

    async def reserve(self, checks: list[Check]) -> Outcome:
        return self.reserve_now(checks)

    def reserve_now(self, checks: list[Check], now_ms: float | None = None) -> Outcome:
        now = self.clock() * 1000 if now_ms is None else now_ms
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        levels: list[list[float]] = []
        remaining: list[float] = []
        reset: list[float] = []
        for i, check in enumerate(checks):
            state = self._current(check, now)
            ok, wait, left, until = _try(check, state, now, check.cost)
            if not ok:
                return Outcome(ok=False, failed=i, retry_ms=wait)
            levels.append(state)
            remaining.append(left)
            reset.append(until)
        crossed = []
        for i, (check, state) in enumerate(zip(checks, levels, strict=True)):
            if check.kind == BUDGET and check.soft and not state[1] and state[0] + check.cost >= check.soft:
                state[1] = 1
                crossed.append(i)
            _apply(check, state, now, check.cost)
            self._state[check.key] = state
        return Outcome(ok=True, remaining=remaining, reset_ms=reset, soft_crossed=crossed, at_ms=now)

    async def peek(self, checks: list[Check]) -> list[float]:
        return self.peek_now(checks)

    def peek_now(self, checks: list[Check], now_ms: float | None = None) -> list[float]:
        now = self.clock() * 1000 if now_ms is None else now_ms
        # _current works on a copy (or a fresh counter) and nothing is stored back: a read leaves no trace.
        return [_used(check, self._current(check, now), now) for check in checks]

    def settle(self, items: list[tuple[Check, float]], now_ms: float | None = None) -> None:
        now = self.clock() * 1000 if now_ms is None else now_ms
        for check, delta in items:
            state = self._current(check, now)
            _apply(check, state, now, delta)
            self._state[check.key] = state

    async def close(self) -> None:
        self._state.clear()

    def _current(self, check: Check, now: float) -> list[float]:
        """The counter as of now: refilled (bucket) or rolled (window); a fresh one if absent or expired."""
        state = self._state.get(check.key)
        if state is None or state[3] <= now:
            if check.kind == BUCKET:
                return [check.capacity, now, 0.0, 0.0]
            rolls = check.kind == WINDOW or check.kind == CONCURRENCY
            return [0.0, 0.0, math.floor(now / check.window_ms) if rolls else 0.0, 0.0]
        state = list(state)
        if check.kind == BUCKET:
            rate = check.limit / 60000
            state[0] = min(check.capacity, state[0] + max(0.0, now - state[1]) * rate)
            state[1] = now
        elif check.kind == WINDOW:
            index = math.floor(now / check.window_ms)
            if state[2] == index - 1:
                state[0], state[1] = 0.0, state[0]
            elif state[2] != index:
                state[0], state[1] = 0.0, 0.0
            state[2] = index
        elif check.kind == CONCURRENCY:  # slots by generation of one lease each, as in limits.lua (no older counters)
            index = math.floor(now / check.window_ms)
            if state[2] == index - 1:
                state[0] -= state[1]
                state[1] = state[0]
            elif state[2] < index - 1:
                state[0], state[1] = 0.0, 0.0
            state[2] = max(state[2], index)
        return state

    def _sweep(self, now: float) -> None:
        for key in [k for k, v in self._state.items() if v[3] <= now]:
            del self._state[key]


def _try(check: Check, state: list[float], now: float, cost: float) -> tuple[bool, float, float, float]:
    """(admitted, retry_ms, remaining after, reset_ms) for `cost` against a current counter."""
    if check.kind == BUCKET:
        rate = check.limit / 60000
        tokens = state[0]
        if tokens < cost:
            return False, (cost - tokens) / rate, 0.0, 0.0
        return True, 0.0, tokens - cost, (check.capacity - tokens + cost) / rate
    if check.kind == WINDOW:
        into = now - state[2] * check.window_ms
        used = state[1] * (1 - into / check.window_ms) + state[0]
        to_end = check.window_ms - into
        if used + cost > check.limit:
            room = check.limit - state[0] - cost
            # The older window's share decays linearly: wait until it leaves room, else for the next window.
            if room >= 0 and state[1] > 0:
                wait = (1 - into / check.window_ms - room / state[1]) * check.window_ms
            else:
                wait = to_end
            return False, max(wait, 1.0), 0.0, 0.0
        return True, 0.0, check.limit - used - cost, to_end
    if check.kind == CONCURRENCY:
        if state[0] + 1 > check.limit:
            return False, 1000.0, 0.0, 0.0
        return True, 0.0, check.limit - state[0] - 1, 0.0
    # BUDGET
    if state[0] >= check.limit or state[0] + cost > check.limit:
        return False, float(check.window_ms), 0.0, 0.0
    return True, 0.0, check.limit - state[0] - cost, float(check.window_ms)


def _used(check: Check, state: list[float], now: float) -> float:
    """What a current counter has taken (Model.peek); limits.lua's "p" mode computes the same."""
    if check.kind == BUCKET:
        return check.capacity - state[0]
    if check.kind == WINDOW:
        into = now - state[2] * check.window_ms
        return state[1] * (1 - into / check.window_ms) + state[0]
    return state[0]


def _apply(check: Check, state: list[float], now: float, amount: float) -> None:
    """Take `amount` (a reservation, or a signed settlement delta) and set the expiry."""
    if check.kind == BUCKET:
        state[0] = min(check.capacity, state[0] - amount)
        state[1] = now
        state[3] = now + (check.capacity - state[0]) / check.limit * 60000 + 1000  # full again: same as absent
    elif check.kind == WINDOW:
        state[0] = max(0.0, state[0] + amount)
        state[3] = now + 2 * check.window_ms + 1000
    elif check.kind == CONCURRENCY:
        if amount < 0:  # from the generation it was taken in; gone already if that one was dropped
            generation = math.floor(check.soft / check.window_ms) if check.soft else state[2] - 1
            if generation < state[2] - 1:
                amount = 0.0
            elif generation == state[2] - 1:
                state[1] = max(0.0, state[1] + amount)
        state[0] = max(0.0, state[0] + amount)
        state[1] = min(state[1], state[0])
        state[3] = now + check.window_ms
    else:
        state[0] = max(0.0, state[0] + amount)
        state[3] = now + check.window_ms + 86_400_000
