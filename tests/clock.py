"""A clock that moves only when the test says so: for breakers, buckets, TTLs and every other timer, so that a test
of time-driven logic never depends on how fast the machine runs it."""

from __future__ import annotations


class FakeClock:
    """Pass `monotonic` (intervals) or `time` (dates) where a `Clock` is taken; `advance` moves both."""

    def __init__(self, start: float = 1_000.0, epoch: float = 1_700_000_000.0) -> None:
        self.now = start
        self.epoch = epoch - start  # time() = epoch + now: dates move with the monotonic time

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
