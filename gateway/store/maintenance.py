"""StoreMaintenance: the store's background upkeep — rows past their table's retention removed, and on
PostgreSQL the day partitions of the coming days made ahead of the writes that need them.

Every worker and replica runs it: removing old rows twice removes nothing the second time, and PostgreSQL's
partition changes take the store's advisory lock. A store that is down is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter

from gateway import tasks
from gateway.config.telemetry import TelemetryConfig
from gateway.store.base import Store, StoreUnavailable, response_store

logger = logging.getLogger("gateway.store")

_DAY_S = 86_400.0


class StoreMaintenance:
    def __init__(
        self,
        store: Store,
        config: TelemetryConfig,
        registry: CollectorRegistry,
        *,
        responses_retention_days: float | None = None,
    ) -> None:
        """responses_retention_days: the stored responses' (responses.retention_days), when the store keeps them;
        their own setting, so that telemetry.retention_days cannot keep a conversation for ever nor cut it short."""
        self.store = store
        self.retention = dict(config.retention_days)
        if responses_retention_days is not None and response_store(store) is not None:
            self.retention["responses"] = responses_retention_days
        self.interval_s = config.maintenance_interval_s
        self._task: asyncio.Task[None] | None = None
        self._removed = Counter(
            "gateway_store_retention_removed", "Rows removed past their table's retention.", ["table"],
            registry=registry,
        )  # fmt: skip
        self._failures = Counter(
            "gateway_store_maintenance_failures", "Maintenance runs that failed (the store was down).",
            registry=registry,
        )  # fmt: skip

    def start(self) -> None:
        if self.retention or hasattr(self.store, "ensure_partitions"):
            self._task = tasks.spawn(self._loop(), name="store-maintenance")

    async def close(self) -> None:
        await tasks.cancel(self._task)

    async def run_once(self) -> dict[str, int]:
        """One pass: the rows removed per table."""
        ensure = getattr(self.store, "ensure_partitions", None)
        if ensure is not None:
            await ensure()
        removed: dict[str, int] = {}
        for table, days in self.retention.items():
            removed[table] = await self.store.retention(table, days * _DAY_S)
            if removed[table]:
                self._removed.labels(table).inc(removed[table])
                logger.info("removed %d rows of %s older than %g days", removed[table], table, days)
        return removed

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                self._failures.inc()
                logger.warning("store maintenance failed, retried in %g s: %s", self.interval_s, exc)
            await asyncio.sleep(self.interval_s)
