"""The garbage collector's pauses, as a histogram: a collection stops the event loop, every request in flight with
it, and shows in the p99 as nothing else does. `gateway_gc_pause_seconds{generation}`; bench/profile.py reads it
to give the collector its share of the CPU per request, which a sampling profiler attributes to whatever code
allocated when the collection began."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

PAUSE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class GcPauses:
    """Times every collection through gc.callbacks while started (a perf_counter call at each end: ~0.1 µs, and
    collections come every few hundred requests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        histogram = Histogram(
            "gateway_gc_pause_seconds", "Pauses of the garbage collector, by generation.", ["generation"],
            buckets=PAUSE_BUCKETS, registry=registry,
        )  # fmt: skip
        self._children = [histogram.labels(str(generation)) for generation in range(3)]
        self._began = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began:
            self._children[min(int(info.get("generation", 0)), 2)].observe(time.perf_counter() - self._began)
            self._began = 0.0
