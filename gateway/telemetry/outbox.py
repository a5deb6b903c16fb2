"""One sink's delivery: a bounded memory queue, a disk spool while the sink is down or slow, replay in order.

Records are in memory (older) or in the spool (newer), never interleaved, so that the sink sees them in the order
they were put and each exactly once (across a restart too: the spool keeps its cursor). With a spool:
- the first failed write moves the whole memory queue, the failed batch at its head, to the spool: an outage is
  durable from its first failure, and retries read from the spool;
- a full memory queue moves to the spool as well, followed by the new records;
- while the spool holds anything, new records go behind them, and memory is used again once it is empty.
Without a spool, the failed batch stays at the head of memory and is retried; what does not fit is dropped.

`put` never does file I/O: in spool mode it appends to a pending list that a spooler task writes to the spool on
a one-thread executor (one thread, and each flush submitted as it takes the list: spool operations stay in order).
The spooler keeps writing while the sink is slow or backing off, but not while a batch from memory is out: should
that batch fail, it must reach the spool ahead of them. What cannot be kept (memory full without a spool, spool
full, disk errors) is counted as dropped and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.tasks import cancel, spawn, wait_for_wakeup
from gateway.telemetry.queue import Record
from gateway.telemetry.spool import Spool

logger = logging.getLogger("gateway.telemetry")

T = TypeVar("T")

FIRST_BACKOFF_S = 0.1
DROP_WARNING_INTERVAL_S = 10.0  # at most one "dropped" warning per sink in this time: counted always, logged once


class SinkRejected(Exception):
    """The sink refused a batch for good (a 4xx other than 408/429): retrying cannot help; the batch is dropped
    and counted as rejected. `records`: how many of the batch were refused, when the sink took the others (a batch
    sent in several requests); None: all of it."""

    def __init__(self, message: str, records: int | None = None) -> None:
        super().__init__(message)
        self.records = records


class BatchSink(Protocol):
    name: str

    async def write(self, records: Sequence[Record]) -> None:
        """Write a batch; raise to have it retried later, SinkRejected to have it dropped."""


class SinkMetrics:
    """The outboxes' metrics on one registry, created once: several outboxes share them, a label per sink."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "gateway_sink_records", "Telemetry records by sink and outcome (queued, sent, retried, spooled, "
            "dropped, rejected).", ["sink", "outcome"], registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "gateway_sink_queue_depth", "Records waiting for a sink, in memory and in its spool.", ["sink"],
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.spool_bytes = Gauge(
            "gateway_sink_spool_bytes", "Bytes waiting in a sink's disk spool.", ["sink"], registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip


# Weak: a registry that is gone (a test's) takes its metrics along, and its id is never mistaken for a new one's.
_metrics: weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics] = weakref.WeakKeyDictionary()


def sink_metrics(registry: CollectorRegistry) -> SinkMetrics:
    metrics = _metrics.get(registry)
    if metrics is None:
        metrics = _metrics[registry] = SinkMetrics(registry)
    return metrics


class Outbox:
    def __init__(
        self,
        sink: BatchSink,
        *,
        registry: CollectorRegistry,
        queue_size: int = 10_000,
        batch_size: int = 200,
        flush_interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
        spool: Spool | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.spool = spool
        metrics = sink_metrics(registry)
        # Children bound once: a labelled lookup costs several times a bound call.
        self._queued_c, self._sent_c, self._retried_c, self._spooled_c, self._dropped_c, self._rejected_c = (
            metrics.records.labels(self.name, outcome)
            for outcome in ("queued", "sent", "retried", "spooled", "dropped", "rejected")
        )
        self._depth_g = metrics.queue_depth.labels(self.name)
        self._bytes_g = metrics.spool_bytes.labels(self.name)
        self._memory: deque[Record] = deque()
        self._inflight: list[Record] = []  # a batch taken from memory: being written, or failed (no spool)
        self._pending: list[Record] = []  # put in spool mode, for the task to append to the spool
        # How many records pending may hold: queue_size put in spool mode, plus what was moved there from memory.
        self._pending_cap = queue_size
        # With a spool, start in spool mode: what an earlier process left there is older than anything put now.
        self._spooling = spool is not None
        self._opened = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"spool-{self.name}") if spool is not None else None
        self._flushing = 0  # spool appends submitted and not done: the spool is not known to be empty
        # Records of a spool read that were delivered but whose ack failed (the cursor could not be saved): the
        # ack is retried before the next read, so they are not sent twice. Set and cleared in the spool thread.
        self._unacked: int | None = None
        self._wakeup = asyncio.Event()  # the delivery task's
        self._spool_wakeup = asyncio.Event()  # the spooler's
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._spooler: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._failing = False
        self._last_drop_warning = -DROP_WARNING_INTERVAL_S
        self._corrupt_seen = 0
        self.sent = 0
        self.retried = 0
        self.rejected = 0
        self.spooled = 0  # written by the spool thread only
        self._dropped_here = 0  # by the event loop
        self._dropped_io = 0  # by the spool thread: two counters, so neither thread's += can lose the other's
        self.last_error = ""

    # --- the request side: cheap, never blocking, never raising ----------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        """An Outbox is itself a Sink (for the TelemetryQueue): writing is putting."""
        self.put(records)

    def put(self, records: Sequence[Record]) -> None:
        n = len(records)
        if not n:
            return
        self._queued_c.inc(n)
        if self._closed:
            self._drop(n, "the outbox is closed")
        elif self._spooling:
            # Bounded too: while a batch from memory is out (a slow write) the spooler waits, and memory must not grow.
            room = max(0, self._pending_cap - len(self._pending))
            self._pending.extend(records[:room])
            if n > room:
                self._drop(n - room, "the spool is not being written fast enough")
            if len(self._pending) >= self.batch_size:
                self._spool_wakeup.set()
        elif len(self._memory) + n <= self.queue_size:
            self._memory.extend(records)
            if len(self._memory) >= self.batch_size:
                self._wakeup.set()
        elif self.spool is None:
            room = max(0, self.queue_size - len(self._memory))
            self._memory.extend(records[:room])
            self._drop(n - room, "the queue is full")
        else:
            # Memory is full: from now on through the spool, what memory holds first, so the order stays put's.
            self._spooling = True
            self._pending.extend(self._memory)
            self._pending.extend(records)
            self._pending_cap = self.queue_size + len(self._pending)
            self._memory.clear()
            self._spool_wakeup.set()
        self._update_gauges()

    def stats(self) -> dict[str, object]:
        spooled = len(self.spool) if self.spool is not None and self._opened else 0
        if spooled or self._pending:
            state = "spooling"
        elif self._failing:
            state = "retrying"
        else:
            state = "ok"
        return {
            "queued": len(self._memory) + len(self._inflight) + len(self._pending),
            "spooled": spooled,
            "spool_bytes": self.spool.size_bytes if self.spool is not None and self._opened else 0,
            "sent": self.sent,
            "retried": self.retried,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "state": state,
            "last_error": self.last_error or None,
        }

    @property
    def dropped(self) -> int:
        return self._dropped_here + self._dropped_io

    # --- the delivery task -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = spawn(self._run(), name=f"outbox-{self.name}")
        if self.spool is not None:
            self._spooler = spawn(self._spool_pending(), name=f"outbox-{self.name}-spooler")

    async def _run(self) -> None:
        while not await self._open():
            await self._pause()
        while True:
            if await self._pump():
                self._backoff = 0.0
                await wait_for_wakeup(self._wakeup, self.flush_interval_s)
            else:
                await self._pause()

    async def _spool_pending(self) -> None:
        while True:
            await wait_for_wakeup(self._spool_wakeup, self.flush_interval_s)
            if self._pending and not self._inflight and self._opened:
                try:
                    await self._flush_pending()
                except Exception:  # the spooler must outlive any one failed flush
                    logger.exception("telemetry sink %s: writing to the spool failed", self.name)

    async def _open(self) -> bool:
        if self.spool is None or self._opened:
            return True
        try:
            await self._io(self._open_blocking)
        except OSError as exc:
            self._error("cannot open its spool", exc)
            return False
        return True

    def _open_blocking(self) -> None:
        assert self.spool is not None
        self.spool.open()
        self._opened = True  # here, in the thread: still true if the awaiting task was cancelled meanwhile

    async def _pump(self) -> bool:
        """Deliver all there is now: memory, then the spool. False on a failure to retry after a pause."""
        try:
            while True:
                # Not while a memory batch is out: should it fail, it must go to the spool ahead of these.
                if self._pending and not self._inflight:
                    await self._flush_pending()
                if not self._inflight and self._memory:
                    take = min(self.batch_size, len(self._memory))
                    self._inflight = [self._memory.popleft() for _ in range(take)]
                if self._inflight:
                    if not await self._deliver(self._inflight):
                        if self.spool is not None:
                            # Durable from the first failure: the failed batch, then all behind it, in order.
                            self._pending[:0] = [*self._inflight, *self._memory]
                            self._pending_cap = self.queue_size + len(self._pending)
                            self._inflight = []
                            self._memory.clear()
                            self._spooling = True
                            await self._flush_pending()
                        return False
                    self._inflight = []
                    if self._memory and len(self._memory) < self.batch_size:
                        # What came in while that batch was out waits for a full batch or the flush interval:
                        # sent at once, it made batches of a hundred-odd records under load, a request each.
                        return True
                    continue
                if self.spool is not None and len(self.spool):
                    records = await self._io(self._read_blocking)
                    if records and not await self._deliver(records):
                        return False
                    await self._io(self._ack_blocking, len(records))
                    self._count_corrupt()
                    continue
                if self._spooling and not self._pending and not self._flushing:
                    self._spooling = False  # the spool is empty: back to memory
                return True
        except OSError as exc:
            self._error("spool I/O failed", exc)
            return False
        finally:
            self._update_gauges()

    async def _deliver(self, records: list[Record]) -> bool:
        n = len(records)
        try:
            await self.sink.write(records)
        except SinkRejected as exc:
            refused = n if exc.records is None else min(n, exc.records)
            self.rejected += refused
            self._rejected_c.inc(refused)
            self.sent += n - refused
            self._sent_c.inc(n - refused)
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "telemetry sink %s rejected %d of a batch of %d records, dropped: %s: %s",
                self.name, refused, n, type(exc).__name__, exc,
            )  # fmt: skip
            return True
        except Exception as exc:  # noqa: BLE001 - any other failure is retried
            self.retried += n
            self._retried_c.inc(n)
            self._failing = True
            self._error("failed, will retry", exc)
            return False
        self.sent += n
        self._sent_c.inc(n)
        self._failing = False
        self.last_error = ""
        return True

    def _next_backoff(self) -> float:
        """0.1 s, doubling up to max_backoff_s, jittered (so that many workers do not retry in step)."""
        self._backoff = min(self.max_backoff_s, max(FIRST_BACKOFF_S, self._backoff * 2))
        return self._backoff * random.uniform(0.5, 1.0)

    async def _pause(self) -> None:
        # The spooler keeps writing the spool meanwhile.
        await asyncio.sleep(self._next_backoff())

    async def _flush_pending(self) -> None:
        # Taken and submitted in one step on the event loop: flushes reach the one-thread executor in put's order.
        records, self._pending = self._pending, []
        self._pending_cap = self.queue_size
        self._flushing += 1
        await self._io(self._append_blocking, records, done=self._flushed)

    def _flushed(self, _: object) -> None:
        self._flushing -= 1
        self._wakeup.set()  # replay what was just spooled

    def _append_blocking(self, records: list[Record]) -> None:
        # Counted here in the thread, so that the count holds even if the awaiting task is cancelled meanwhile.
        assert self.spool is not None
        try:
            written = self.spool.append(records)
        except OSError as exc:
            written, reason = 0, f"the spool cannot be written: {type(exc).__name__}: {exc}"
        else:
            reason = "the spool is full"
        self.spooled += written
        self._spooled_c.inc(written)
        if lost := len(records) - written:
            self._dropped_io += lost
            self._dropped_c.inc(lost)
            self._warn_dropped(lost, reason)

    def _read_blocking(self) -> list[Record]:
        assert self.spool is not None
        self._retry_ack_blocking()  # in the thread: in order with an ack still running for a cancelled task
        return self.spool.read(self.batch_size)

    def _ack_blocking(self, n: int) -> None:
        assert self.spool is not None
        self._unacked = n
        self.spool.ack(n)  # all or nothing: on OSError, the same ack can be retried
        self._unacked = None

    def _retry_ack_blocking(self) -> None:
        assert self.spool is not None
        if self._unacked is not None:
            self.spool.ack(self._unacked)
            self._unacked = None

    def _count_corrupt(self) -> None:
        assert self.spool is not None
        if lost := self.spool.corrupt - self._corrupt_seen:
            self._corrupt_seen = self.spool.corrupt
            self._drop(lost, "unreadable lines in the spool")

    async def _io(self, fn: Callable[..., T], *args: Any, done: Callable[[object], None] | None = None) -> T:
        assert self._executor is not None
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if done is not None:
            future.add_done_callback(done)
        # Shielded: a cancelled caller does not stop the thread, and `done` must run when the thread is done.
        return await asyncio.shield(future)

    # --- shutdown --------------------------------------------------------------------------------------------

    async def close(self, deadline_s: float = 10.0) -> None:
        """Deliver for up to deadline_s; what is left goes to the spool (to be sent after a restart), or without
        a spool is dropped and counted. Then the spool is closed."""
        if self._closed:
            return
        await cancel(self._task)
        await cancel(self._spooler)
        self._task = self._spooler = None
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        opened = await self._open()
        while self._has_work() and (left := end - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    ok = await self._pump()
            except TimeoutError:
                break
            if not ok:
                if opened and self.spool is not None and not self._in_memory():
                    break  # all is safe in the spool, for after the restart: only memory needs the deadline
                await asyncio.sleep(min(max(0.0, end - loop.time()), self._next_backoff()))
        self._closed = True  # from here on, put drops (counted): nothing would deliver it
        left_over = [*self._inflight, *self._memory, *self._pending]
        self._inflight, self._pending = [], []
        self._memory.clear()
        if left_over and self.spool is not None and opened:
            await self._io(self._append_blocking, left_over)
            logger.warning("telemetry sink %s: %d records spooled for after the restart", self.name, len(left_over))
        elif left_over:
            self._drop(len(left_over), "shutdown came before they could be written")
            logger.error(
                "telemetry sink %s: %d records could not be written before shutdown", self.name, len(left_over)
            )
        self._update_gauges()  # what is left in the spool stays visible
        if self.spool is not None and self._executor is not None:
            if opened:
                try:
                    await self._io(self._retry_ack_blocking)  # else its records come again after the restart
                except OSError as exc:
                    self._error("cannot save its spool cursor", exc)
                await self._io(self.spool.close)
            self._opened = False
            self._executor.shutdown(wait=False)

    def _has_work(self) -> bool:
        waiting = len(self.spool) if self.spool is not None and self._opened else 0
        return bool(self._in_memory() or waiting)

    def _in_memory(self) -> bool:
        return bool(self._memory or self._inflight or self._pending)

    # --- accounting ------------------------------------------------------------------------------------------

    def _drop(self, n: int, reason: str) -> None:
        self._dropped_here += n
        self._dropped_c.inc(n)
        self._warn_dropped(n, reason)

    def _warn_dropped(self, n: int, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_INTERVAL_S:
            self._last_drop_warning = now
            logger.warning(
                "telemetry sink %s: dropped %d records (%s); %d dropped so far", self.name, n, reason, self.dropped
            )

    def _error(self, what: str, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.warning("telemetry sink %s %s: %s: %s", self.name, what, type(exc).__name__, exc)

    def _update_gauges(self) -> None:
        waiting = len(self.spool) if self.spool is not None and self._opened else 0
        self._depth_g.set(len(self._memory) + len(self._inflight) + len(self._pending) + waiting)
        if self.spool is not None:
            self._bytes_g.set(self.spool.size_bytes if self._opened else 0)
