"""How late the event loop runs what is due: a timer every 10 ms notes how long after its time it ran, into
`gateway_event_loop_lag_seconds`. Work that holds the loop (a batch encoded in one go, a collection, a regular
expression over a long prompt) delays every request in flight by as much, and shows here before it shows in the
p99. One wake-up every 10 ms costs a few µs: ~0.05 % of a core."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

INTERVAL_S = 0.01
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopLag:
    def __init__(self, registry: CollectorRegistry, interval_s: float = INTERVAL_S) -> None:
        self._lag = Histogram(
            "gateway_event_loop_lag_seconds", "How late the event loop ran a timer (sampled every 10 ms).",
            buckets=LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self._handle is None:
            self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = time.perf_counter() + self.interval_s
        self._handle = loop.call_later(self.interval_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lag.observe(max(0.0, time.perf_counter() - self._due))
        self._schedule(loop)
