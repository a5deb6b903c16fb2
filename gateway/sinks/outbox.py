"""One sink's delivery: a bounded memory queue, a disk spool while the sink is down or slow, replay in order.

Records are in memory (older) or in the spool (newer), never interleaved, so that the sink sees them in the order
they were put and each exactly once (across a restart too: the spool keeps its cursor). With a spool:
- the first failed write moves the whole memory queue, the failed batch at its head, to the spool: an outage is
  durable from its first failure, and retries read from the spool;
- a write that takes longer than `write_timeout_s` has failed (the sink is `stalled`): a hung database is an outage;
- a record that has waited `spill_after_s` in memory (a slow or hung write ahead of it) moves to the spool with all
  of memory, the batch being written at its head: a crash then loses nothing older than that. Should that write
  succeed after all, its records are skipped in the spool;
- a full memory queue moves to the spool as well, followed by the new records;
- while the spool holds anything, new records go behind them, and memory is used again once it is empty.
Without a spool, the failed batch stays at the head of memory and is retried; what does not fit is dropped.
A record the sink refuses for good (RecordsRefused: a value its store cannot take) is set aside in the sink's
dead-letter file and counted, and the records behind it go on.

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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from gateway.sinks.deadletter import DeadLetter
from gateway.sinks.metrics import sink_metrics
from gateway.sinks.spool import Spool
from gateway.store.base import RecordsRefused
from gateway.store.records import Record
from gateway.tasks import cancel, spawn, wait_for_wakeup

logger = logging.getLogger("gateway.telemetry")

T = TypeVar("T")
SinkState = Literal["ok", "spooling", "retrying", "stalled"]

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
        dead_letter: DeadLetter | None = None,
        write_timeout_s: float | None = None,
        spill_after_s: float | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.spool = spool
        self.dead_letter = dead_letter if spool is not None else None  # written from the spool's thread
        self.write_timeout_s = write_timeout_s
        self.spill_after_s = spill_after_s if spool is not None else None
        metrics = sink_metrics(registry)
        # Children bound once: a labelled lookup costs several times a bound call.
        (
            self._queued_c, self._sent_c, self._retried_c, self._spooled_c, self._dropped_c, self._rejected_c,
            self._dead_c,
        ) = (
            metrics.records.labels(self.name, outcome)
            for outcome in ("queued", "sent", "retried", "spooled", "dropped", "rejected", "dead_lettered")
        )  # fmt: skip
        self._depth_g = metrics.queue_depth.labels(self.name)
        self._bytes_g = metrics.spool_bytes.labels(self.name)
        self._memory: deque[Record] = deque()
        # With spill_after_s: when each put's records came into memory, (how many, monotonic time), oldest first.
        self._arrivals: deque[tuple[int, float]] = deque()
        self._inflight: list[Record] = []  # a batch taken from memory: being written, or failed (no spool)
        self._inflight_since = 0.0  # when the oldest of its records came into memory
        # How many records at the head of the spool are the batch being written (spilled while it was out): they
        # are skipped there should the write succeed. Set when spilled; _head_spooled: how many the spool took.
        self._inflight_spilled = 0
        self._head_spooled = 0
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
        self._stalled = False  # the last write took longer than write_timeout_s
        # Records per write from the spool: halved after a write that timed out, doubled back after one that did
        # not, so that a store slow enough to need more than write_timeout_s for a full batch still gets them all.
        self._read_size = batch_size
        self._last_drop_warning = -DROP_WARNING_INTERVAL_S
        self._corrupt_seen = 0
        self.sent = 0
        self.retried = 0
        self.rejected = 0
        self.dead_lettered = 0  # written by the spool thread only
        self.last_refusal = ""  # why the sink last refused a record for good
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
            if self.spill_after_s is not None:
                self._arrivals.append((n, time.monotonic()))
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
            self._arrivals.clear()
            self._spool_wakeup.set()
        self._update_gauges()

    def stats(self) -> dict[str, object]:
        spooled = len(self.spool) if self.spool is not None and self._opened else 0
        return {
            "queued": self._queued(),
            "spooled": spooled,
            "spool_bytes": self.spool.size_bytes if self.spool is not None and self._opened else 0,
            "sent": self.sent,
            "retried": self.retried,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
            "dead_letter_bytes": self.dead_letter.size_bytes if self.dead_letter is not None else 0,
            "state": self.state,
            "last_error": self.last_error or None,
            "last_refusal": self.last_refusal or None,
        }

    @property
    def state(self) -> SinkState:
        """stalled: the last write took longer than write_timeout_s (the sink hangs); spooling: records wait on
        disk (the sink fails, or is catching up); retrying: the last write failed, and records wait in memory;
        ok: the last write went through and nothing waits on disk."""
        if self._stalled:
            return "stalled"
        if (self.spool is not None and self._opened and len(self.spool)) or self._pending:
            return "spooling"
        return "retrying" if self._failing else "ok"

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
            if not self._opened:
                continue
            try:
                if self._spill_due(time.monotonic()):
                    await self._spill()
                # Not while a batch from memory is out, unless it went to the spool first: should it fail, it
                # must be spooled ahead of these.
                elif self._pending and (not self._inflight or self._inflight_spilled):
                    await self._flush_pending()
            except Exception:  # the spooler must outlive any one failed flush
                logger.exception("telemetry sink %s: writing to the spool failed", self.name)

    def _spill_due(self, now: float) -> bool:
        """Whether a record has waited spill_after_s in memory (in the batch being written, or behind it)."""
        if self.spill_after_s is None or self._spooling:
            return False
        oldest = self._inflight_since if self._inflight else self._arrivals[0][1] if self._arrivals else now
        return now - oldest >= self.spill_after_s

    async def _spill(self) -> None:
        """Memory to the spool, the batch being written first (the spool is empty in memory mode): from here on
        durable, and in order. Its write goes on; if it succeeds, _pump skips those records in the spool."""
        self._inflight_spilled = len(self._inflight)
        self._pending[:0] = [*self._inflight, *self._memory]
        self._memory.clear()
        self._arrivals.clear()
        self._spooling = True
        await self._flush_pending(head=self._inflight_spilled)

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
                    self._inflight_since = self._taken(take)
                if self._inflight:
                    delivered = await self._deliver(self._inflight)
                    if self._inflight_spilled:
                        # Spilled to the spool while it was out: there, at the head, it waits for a retry; or,
                        # delivered after all, it is skipped.
                        spilled, self._inflight_spilled, self._inflight = self._inflight_spilled, 0, []
                        if not delivered:
                            return False
                        await self._io(self._skip_blocking, spilled)
                        continue
                    if not delivered:
                        if self.spool is not None:
                            # Durable from the first failure: the failed batch, then all behind it, in order.
                            self._pending[:0] = [*self._inflight, *self._memory]
                            self._pending_cap = self.queue_size + len(self._pending)
                            self._inflight = []
                            self._memory.clear()
                            self._arrivals.clear()
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
            async with asyncio.timeout(self.write_timeout_s):
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
        except RecordsRefused as exc:
            refused_records = [(records[i], why) for i, why in exc.refused if 0 <= i < n]
            self.sent += n - len(refused_records)
            self._sent_c.inc(n - len(refused_records))
            await self._set_aside(refused_records)
            self._delivered()
            return True
        except Exception as exc:  # noqa: BLE001 - any other failure is retried
            self.retried += n
            self._retried_c.inc(n)
            self._failing = True
            if isinstance(exc, TimeoutError):
                self._stalled = True
                self._read_size = max(1, self._read_size // 2)
                self._error(f"stalled (a write bounded at {self.write_timeout_s}s), will retry", exc)
            else:
                self._stalled = False
                self._error("failed, will retry", exc)
            return False
        self.sent += n
        self._sent_c.inc(n)
        self._delivered()
        return True

    def _delivered(self) -> None:
        self._failing = self._stalled = False
        self.last_error = ""
        self._read_size = min(self.batch_size, self._read_size * 2)

    async def _set_aside(self, refused: list[tuple[Record, str]]) -> None:
        """Records the sink refused for good: into the dead-letter file (counted there), or dropped and counted."""
        if not refused:
            return
        self.last_refusal = refused[-1][1]
        if self.dead_letter is None:
            self._drop(len(refused), f"the sink refused them ({refused[-1][1]}) and there is no dead-letter file")
            return
        await self._io(self._dead_letter_blocking, refused)

    def _dead_letter_blocking(self, refused: list[tuple[Record, str]]) -> None:
        assert self.dead_letter is not None
        try:
            written = self.dead_letter.append(refused)
        except OSError as exc:
            written, reason = 0, f"the dead-letter file cannot be written: {type(exc).__name__}: {exc}"
        else:
            reason = "the dead-letter file is full"
        self.dead_lettered += written
        self._dead_c.inc(written)
        logger.warning(
            "telemetry sink %s refused %d records, set aside in %s: %s",
            self.name, written, self.dead_letter.path, refused[-1][1],
        )  # fmt: skip
        if lost := len(refused) - written:
            self._dropped_io += lost
            self._dropped_c.inc(lost)
            self._warn_dropped(lost, reason)

    def _taken(self, n: int) -> float:
        """n records left memory from its head: forget their arrivals; when the first of them had arrived."""
        arrivals = self._arrivals
        first = arrivals[0][1] if arrivals else time.monotonic()
        while n > 0 and arrivals:
            count, at = arrivals.popleft()
            if count > n:
                arrivals.appendleft((count - n, at))
            n -= count
        return first

    def _next_backoff(self) -> float:
        """0.1 s, doubling up to max_backoff_s, jittered (so that many workers do not retry in step)."""
        self._backoff = min(self.max_backoff_s, max(FIRST_BACKOFF_S, self._backoff * 2))
        return self._backoff * random.uniform(0.5, 1.0)

    async def _pause(self) -> None:
        # The spooler keeps writing the spool meanwhile.
        await asyncio.sleep(self._next_backoff())

    async def _flush_pending(self, head: int = 0) -> None:
        # Taken and submitted in one step on the event loop: flushes reach the one-thread executor in put's order.
        records, self._pending = self._pending, []
        self._pending_cap = self.queue_size
        self._flushing += 1
        await self._io(self._append_blocking, records, head, done=self._flushed)

    def _flushed(self, _: object) -> None:
        self._flushing -= 1
        self._wakeup.set()  # replay what was just spooled

    def _append_blocking(self, records: list[Record], head: int = 0) -> None:
        # Counted here in the thread, so that the count holds even if the awaiting task is cancelled meanwhile.
        assert self.spool is not None
        try:
            written = self.spool.append(records)
        except OSError as exc:
            written, reason = 0, f"the spool cannot be written: {type(exc).__name__}: {exc}"
        else:
            reason = "the spool is full"
        if head:  # the batch being written, spilled: how much of it the spool holds, for _skip_blocking
            self._head_spooled = min(head, written)
        self.spooled += written
        self._spooled_c.inc(written)
        if lost := len(records) - written:
            self._dropped_io += lost
            self._dropped_c.inc(lost)
            self._warn_dropped(lost, reason)

    def _read_blocking(self) -> list[Record]:
        assert self.spool is not None
        self._retry_ack_blocking()  # in the thread: in order with an ack still running for a cancelled task
        return self.spool.read(self._read_size)

    def _skip_blocking(self, spilled: int) -> None:
        """The batch that was spilled while it was written went through after all: past it in the spool (it is at
        the head: nothing reads the spool while a batch from memory is out)."""
        assert self.spool is not None
        n, self._head_spooled = min(spilled, self._head_spooled), 0
        if n:
            self._retry_ack_blocking()
            self._ack_blocking(len(self.spool.read(n)))

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
        inflight = [] if self._inflight_spilled else self._inflight  # spilled: in the spool already
        left_over = [*inflight, *self._memory, *self._pending]
        self._inflight, self._pending, self._inflight_spilled = [], [], 0
        self._memory.clear()
        self._arrivals.clear()
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

    def _queued(self) -> int:
        """Records in memory (a batch being written that was spilled is counted in the spool)."""
        inflight = 0 if self._inflight_spilled else len(self._inflight)
        return len(self._memory) + inflight + len(self._pending)

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
        self._depth_g.set(self._queued() + waiting)
        if self.spool is not None:
            self._bytes_g.set(self.spool.size_bytes if self._opened else 0)
