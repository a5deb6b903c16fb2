import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.telemetry.loop_lag import LoopLag

pytestmark = pytest.mark.anyio


def _count(registry: CollectorRegistry, le: str | None = None) -> float:
    if le is None:
        return registry.get_sample_value("gateway_event_loop_lag_seconds_count") or 0.0
    return registry.get_sample_value("gateway_event_loop_lag_seconds_bucket", {"le": le}) or 0.0


async def _ticks(registry: CollectorRegistry, at_least: float) -> None:
    async with asyncio.timeout(30):
        while _count(registry) < at_least:  # noqa: ASYNC110 - polling a metric the timer under test moves
            await asyncio.sleep(0.001)


async def test_a_loop_held_longer_than_a_bucket_shows_above_it_and_stop_ends_the_timer():
    registry = CollectorRegistry()
    lag = LoopLag(registry, interval_s=0.001)
    lag.start()
    lag.start()  # twice: still one timer
    await _ticks(registry, 3)
    # Hold the loop: the tick due within the next millisecond runs at least 59 ms late, however fast the machine.
    time.sleep(0.06)  # noqa: ASYNC251 - holding the loop is the point
    await _ticks(registry, 5)
    assert _count(registry) - _count(registry, "0.05") >= 1
    lag.stop()
    stopped = _count(registry)
    await asyncio.sleep(0.02)
    assert _count(registry) == stopped
