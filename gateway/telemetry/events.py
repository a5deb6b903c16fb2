"""Gateway events (a breaker opened or closed, a fallback used, a retry budget exhausted, a deployment drained):
counted in metrics, logged, and queued for the event sinks — the store's event log and an optional webhook that
receives them in batches (a StackStorm webhook trigger, say, which can run a remediation workflow). Each sink has
an outbox of its own, as the request records' sinks do: retries with backoff, and a disk spool while it is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from gateway.config import WebhookConfig
from gateway.ids import new_id
from gateway.sinks.exporters import SinkUnavailable, status_failure
from gateway.store.records import Record
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.queue import TelemetryQueue

logger = logging.getLogger("gateway.events")


class Events:
    def __init__(self, metrics: Metrics, queue: TelemetryQueue | None = None) -> None:
        self.metrics = metrics
        self.queue = queue

    def emit(self, event_type: str, **attrs: Any) -> None:
        self.metrics.events.labels(event_type).inc()
        # The gateway's id, as for records: unique across workers and replicas (a time and a per-process counter
        # were not), unpredictable.
        record = {"id": new_id(), "ts": time.time(), "type": event_type, "attrs": attrs}
        logger.info("event %s %s", event_type, orjson.dumps(attrs).decode())
        if self.queue is not None:
            self.queue.put(record)


class WebhookSink:
    """POSTs a batch as {"events": [...]}, through an outbox of its own (gateway/runtime.py): a network error or
    a 3xx, 5xx, 408 or 429 is retried later (the batch waiting in the spool meanwhile); any other 4xx refuses the batch
    for good, which is dropped and counted (gateway_sink_records_total{sink="events_webhook",outcome="rejected"})."""

    name = "events_webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._client = httpx.AsyncClient(timeout=config.timeout_s)

    async def write(self, records: Sequence[Record]) -> None:
        body = orjson.dumps({"events": list(records)})
        headers = {"content-type": "application/json", **self.config.headers}
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # Only the type: a client's message may carry the URL, and a webhook URL may carry a token.
            raise SinkUnavailable(f"events webhook: {type(exc).__name__}") from None
        # A redirect is retried too: the endpoint may be moving.
        failure = status_failure("events webhook", response.status_code, retry_redirects=True)
        if failure is not None:
            raise failure

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
