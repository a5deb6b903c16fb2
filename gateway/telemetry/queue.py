"""The telemetry queue: bounded, never blocking the request path, drained in batches by one background writer.

The request path only appends a finished request's record (`put`). The writer completes the batch's records
(token counts the upstream did not give) and hands the batch to every sink (the store, the access log). A sink
that fails is retried with backoff while the batch stays at the head of the queue; what arrives while the queue
is full is dropped and counted, never waited on.
Shutdown (`close`) flushes what is queued, up to a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from gateway.context import RequestContext
from gateway.sinks.base import Sink
from gateway.store.records import Record
from gateway.tasks import cancel, spawn, wait_for_wakeup
from gateway.telemetry.metrics import Metrics

logger = logging.getLogger("gateway.telemetry")

# A record, or a request whose record needs work off the request path first (counting its tokens).
Item = Record | RequestContext


class TelemetryQueue:
    def __init__(
        self,
        *,
        metrics: Metrics,
        to_records: Callable[[list[Item]], Awaitable[list[Record]]],
        sinks: Sequence[Sink],
        maxsize: int = 100_000,
        batch_size: int = 1000,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.metrics = metrics
        self.to_records = to_records
        self.sinks = list(sinks)
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self._items: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Batches taken off the queue but not yet written by every sink: (records, sinks still to write).
        self._pending: list[tuple[list[Record], list[Sink]]] = []
        self.dropped = 0
        self.written = 0
        self.last_error = ""  # the failing sink's latest error, until it writes again

    def put(self, item: Item) -> bool:
        """Never blocks, never raises. False when the record was dropped (queue full)."""
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            self.metrics.queue_dropped.inc()
            return False
        self._items.append(item)
        if len(self._items) >= self.batch_size:
            self._wakeup.set()
        return True

    def stats(self) -> dict[str, object]:
        """What /api/v1/telemetry/status shows of this queue."""
        return {
            "queued": len(self),
            "capacity": self.maxsize,
            "written": self.written,
            "dropped": self.dropped,
            "sinks": [sink.name for sink in self.sinks],
            "last_error": self.last_error or None,
        }

    def __len__(self) -> int:
        return len(self._items) + sum(len(records) for records, _ in self._pending)

    def start(self) -> None:
        self._task = spawn(self._run(), name="telemetry-writer")

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            else:
                await wait_for_wakeup(self._wakeup, self.flush_interval_s)
            self._wakeup.clear()
            ok = await self.flush_once()
            backoff = 0.0 if ok else min(self.max_backoff_s, max(0.1, backoff * 2)) * (0.5 + random.random() / 2)

    async def flush_once(self) -> bool:
        """Write everything queued now, batch by batch. False if a sink failed (its batch is kept). The requests'
        metrics are written first (Metrics.flush): the writer's wake-up is their batch too."""
        self.metrics.flush()
        while True:
            if not self._pending:
                if not self._items:
                    break
                batch = [self._items.popleft() for _ in range(min(self.batch_size, len(self._items)))]
                self._pending.append((await self.to_records(batch), list(self.sinks)))
            records, sinks = self._pending[0]
            for sink in list(sinks):
                try:
                    await sink.write(records)
                except Exception as exc:  # noqa: BLE001 - any sink failure keeps the batch for a retry
                    self.metrics.sink_errors.labels(sink.name).inc()
                    logger.warning("telemetry sink %s failed, will retry: %s", sink.name, exc)
                    self.last_error = f"{sink.name}: {type(exc).__name__}"
                    self.metrics.queue_depth.set(len(self))
                    return False
                sinks.remove(sink)
                self.metrics.records_written.labels(sink.name).inc(len(records))
            self._pending.pop(0)
            self.written += len(records)
            self.last_error = ""
        self.metrics.queue_depth.set(len(self))
        return True

    async def close(self, deadline_s: float = 10.0) -> None:
        """Stop the writer and flush what is left, trying until the deadline."""
        self._closing = True
        await cancel(self._task)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while len(self) and loop.time() < end:
            if await self.flush_once():
                break
            await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
        if len(self):
            logger.error("telemetry: %d records could not be written before shutdown", len(self))
