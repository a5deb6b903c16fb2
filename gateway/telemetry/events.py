"""Gateway events (a breaker opened or closed, a fallback used, a retry budget exhausted, a deployment drained):
counted in metrics, logged, and queued for the event sinks — the store's event log and an optional webhook that
receives them in batches (a StackStorm webhook trigger, say, which can run a remediation workflow)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from gateway.config import WebhookConfig
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.queue import Record, TelemetryQueue

logger = logging.getLogger("gateway.events")


class Events:
    def __init__(self, metrics: Metrics, queue: TelemetryQueue | None = None) -> None:
        self.metrics = metrics
        self.queue = queue
        self._counter = 0

    def emit(self, event_type: str, **attrs: Any) -> None:
        self.metrics.events.labels(event_type).inc()
        self._counter += 1
        record = {"id": f"{time.time_ns():x}-{self._counter}", "ts": time.time(), "type": event_type, "attrs": attrs}
        logger.info("event %s %s", event_type, orjson.dumps(attrs).decode())
        if self.queue is not None:
            self.queue.put(record)


class WebhookSink:
    """POSTs a batch as {"events": [...]}; a failure raises, and the queue retries the same batch later."""

    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._client = httpx.AsyncClient(timeout=config.timeout_s)

    async def write(self, records: Sequence[Record]) -> None:
        body = orjson.dumps({"events": list(records)})
        headers = {"content-type": "application/json", **self.config.headers}
        response = await self._client.post(self.config.url, content=body, headers=headers)
        response.raise_for_status()

    async def close(self) -> None:
        await self._client.aclose()


class EventLogSink:
    """The store's event_logs table."""

    name = "event_log"

    def __init__(self, store: Any) -> None:
        self.store = store

    async def write(self, records: Sequence[Record]) -> None:
        await self.store.write_events(records)


async def passthrough(batch: list[Any]) -> list[Record]:
    return batch
