"""Store maintenance: rows past their table's retention go, newer ones stay, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, parse_config
from gateway.config.telemetry import TelemetryConfig
from gateway.store.maintenance import StoreMaintenance
from tests.unit.store.conftest import record

pytestmark = pytest.mark.anyio

DAY = 86_400.0


async def test_retention_removes_old_rows_only(store) -> None:
    now = time.time()
    await store.write([record(1, ts=now - 10 * DAY), record(2, ts=now - 3 * DAY), record(3, ts=now - 60)])
    await store.write_events([
        {"id": "e-old", "ts": now - 40 * DAY, "type": "breaker_open", "attrs": {}},
        {"id": "e-new", "ts": now - DAY, "type": "breaker_open", "attrs": {}},
    ])  # fmt: skip
    config = TelemetryConfig(retention_days={"model_cost_logs": 7, "event_logs": 30})
    registry = CollectorRegistry()
    removed = await StoreMaintenance(store, config, registry).run_once()
    assert removed == {"model_cost_logs": 1, "event_logs": 1}
    assert sorted(r["id"] for r in await store.recent()) == ["r2", "r3"]
    assert [e["id"] for e in await store.events()] == ["e-new"]
    assert registry.get_sample_value("gateway_store_retention_removed_total", {"table": "model_cost_logs"}) == 1
    assert await StoreMaintenance(store, config, CollectorRegistry()).run_once() == {
        "model_cost_logs": 0,
        "event_logs": 0,
    }


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("telemetry: {retention_days: {model_cost_log: 3, event_logs: 0}, maintenance_interval_s: 0}")
    paths = [path for path, _ in caught.value]
    assert paths == [
        "telemetry.retention_days.model_cost_log",
        "telemetry.retention_days.event_logs",
        "telemetry.maintenance_interval_s",
    ]
