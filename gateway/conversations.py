"""Conversations: the Responses API's stored responses, which previous_response_id, GET and DELETE find.

save() is synchronous and never waits: the response goes into a bounded in-memory LRU at once, so that the next turn
on this worker finds it even before the store has it, and a background writer then puts it in the store, where it
outlives the process and reaches the other workers and replicas. Reads look in memory first, then ask the store
(bounded by read_timeout_s: a store that hangs fails the read with a 503, it does not hold the request).

When the store is down or hangs, a response waits in memory for it ("unsaved", at most memory_max of them; past
that the oldest is given up): the writer retries with a backoff that grows to max_backoff_s, so that the
conversations of an outage reach the store when it is back. The outage is logged once, when it starts, and once
when it ends; each failed write counts in gateway_responses_persist_failures_total, each response given up (past
the bound, refused by the store, still waiting at shutdown) in gateway_responses_not_stored_total.

What memory holds is this worker's view: a response deleted through another worker or replica stays readable here
until it leaves this worker's memory (or the store's retention removes it and it is no longer used). With no store
(telemetry.store: none) everything works from memory alone, for as long as it holds the responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway import tasks
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.ids import id_time_s
from gateway.store.base import ResponseStore, StoredResponse, StoreUnavailable, describe

logger = logging.getLogger("gateway.responses")
_Found = TypeVar("_Found", StoredResponse | None, list[StoredResponse])

# Responses written in one transaction at most: one commit for the responses of a busy moment, as records are
# written in batches (a write per response cost the store's thread a commit each: +30 % CPU per request).
BATCH = 256
# How long the writer waits, once woken, for more responses to join the batch, by default: the runtime passes
# telemetry.flush_interval_ms, so that responses are committed at the records' pace (a commit per response or few
# cost the stored path its share of page writes, a thread hand-off and the writer's round; at 50 ms a quiet
# gateway still committed one response or two at a time). Another replica finds the response that much later at
# worst, within FRESH_S's re-reads; this worker finds it in memory at once, and close() writes what waits at once.
LINGER_S = 0.2
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for the responses still unsaved
_FIRST_BACKOFF_S = 0.5
# A response made this recently, not found, may be on its way to the store from the worker or replica that made it:
# the read is tried again (after 5 ms, then twice as long each time, up to 100 ms) until the id is this old.
FRESH_S = 2.0
_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.1
_UNREADABLE = "Stored responses cannot be read now; try again shortly."


class Conversations:
    def __init__(
        self,
        store: ResponseStore | None,
        *,
        memory_max: int,
        memory_max_mb: float = 64.0,
        write_timeout_s: float,
        registry: CollectorRegistry,
        read_timeout_s: float = 5.0,
        max_chain: int = 1000,
        max_backoff_s: float = 30.0,
        linger_s: float = LINGER_S,
    ) -> None:
        """store: telemetry.store when it keeps responses (gateway.store.base.response_store), None for memory only.
        memory_max: responses.memory_max. write_timeout_s: a write with no answer within this long has failed
        (telemetry.write_timeout_s); read_timeout_s: likewise a read (telemetry.query_timeout_s). max_chain:
        responses.max_chain, the most turns history() brings back. linger_s: how long the writer, woken by a
        response, waits for others to share its transaction (telemetry.flush_interval_ms)."""
        self.store = store
        self.memory_max = memory_max
        self.memory_max_bytes = int(memory_max_mb * 1_048_576)
        # The sums of the JSON sizes of the responses in memory and of the unsaved: both are bounded by them.
        self._memory_bytes = 0
        self._unsaved_bytes = 0
        self.write_timeout_s = write_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_chain = max_chain
        self.max_backoff_s = max_backoff_s
        self.linger_s = linger_s
        self._memory: OrderedDict[str, StoredResponse] = OrderedDict()  # least recently used first
        self._unsaved: dict[str, StoredResponse] = {}  # waiting for the store, oldest first
        # The ids of the batch being written (one at a time), each to the Event set when the write is over.
        self._writing: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()  # a response to write
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = False
        self._failures = Counter(
            "gateway_responses_persist_failures", "Writes of stored responses that failed (the store down or hung).",
            registry=registry,
        )  # fmt: skip
        self._not_stored = Counter(
            "gateway_responses_not_stored", "Responses given up before the store had them (kept in memory only).",
            registry=registry,
        )  # fmt: skip
        self._waiting = Gauge(
            "gateway_responses_unsaved", "Responses in memory waiting for the store.", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip

    # -- the request path ---------------------------------------------------------------------------------------

    def save(self, r: StoredResponse) -> None:
        """Keep `r` (replacing a response of the same id): in memory now, in the store soon."""
        size = len(r.response_json) + len(r.input_json)  # StoredResponse.size, inline: once per request
        self._remember(r, size)
        if self.store is None or self._closing.is_set():
            return
        unsaved, id_ = self._unsaved, r.id
        if id_ in unsaved:  # saved again before the store had it: the new version replaces it, at the end
            self._forget_unsaved(id_)
        unsaved[id_] = r
        self._unsaved_bytes += size
        while len(unsaved) > self.memory_max or self._unsaved_bytes > self.memory_max_bytes:
            self._forget_unsaved(next(iter(unsaved)))
            self._not_stored.inc()
        # gateway_responses_unsaved is set by the writer, after each batch: not once per response.
        task = self._task
        if task is None or task.done():  # done: a bug ended it (tasks.spawn logged it); a new one
            self._task = tasks.spawn(self._writer(), name="responses-writer")
        self._wake.set()

    async def get(self, response_id: str, *, project: str) -> StoredResponse | None:
        """The response, if it is of `project`; ServiceUnavailable when only the store could say and it cannot."""
        found = self._known(response_id)
        if found is not None:
            return found if found.project == project else None  # ids are unique: the store holds no other
        store = self.store
        if store is None:
            return None
        found = await self._read_fresh(response_id, lambda: store.get_response(response_id, project=project))
        if found is not None:
            self._remember(found)
        return found

    async def history(self, response_id: str, *, project: str) -> list[StoredResponse] | None:
        """The response and the earlier turns it continues (by previous_response_id), oldest first; None when the
        response is not there (or of another project). From memory when it holds every link, else memory's newest
        links and one store query for the older ones. A link missing (deleted, past retention) or of another
        project ends the chain there. InvalidRequest past max_chain turns; ServiceUnavailable when the store is
        needed and cannot answer."""
        newest: list[StoredResponse] = []  # newest first
        link: str | None = response_id
        while link is not None:
            found = self._known(link)
            if found is None:
                break
            if found.project != project:
                link = None  # the store would refuse it too
                break
            newest.append(found)
            if len(newest) > self.max_chain:
                raise self._too_long()
            link = found.previous_response_id
        older: list[StoredResponse] = []
        store = self.store
        if link is not None and store is not None:
            older_link, depth = link, self.max_chain + 1 - len(newest)

            def read() -> Awaitable[list[StoredResponse]]:
                return store.response_chain(older_link, project=project, max_depth=depth)

            # Only the response asked for may be too young for the store: a link missing further back is gone.
            older = await (self._read_fresh(link, read) if not newest else self._read(read, link))
            if len(older) + len(newest) > self.max_chain:
                raise self._too_long()
            for r in older:  # the next turn's history then comes from memory
                self._remember(r)
        chain = older + newest[::-1]
        return chain or None

    async def delete(self, response_id: str, *, project: str) -> bool:
        """Remove the response from memory and the store; whether there was one of `project`."""
        found = self._known(response_id)
        removed = False
        if found is not None and found.project == project:
            self._forget(response_id)
            self._forget_unsaved(response_id)
            self._waiting.set(len(self._unsaved))
            removed = True
            writing = self._writing.get(response_id)
            if writing is not None:  # a write that commits after the deletion would bring it back: wait for it
                try:
                    async with asyncio.timeout(self.write_timeout_s):
                        await writing.wait()
                except TimeoutError:
                    pass  # the write is bounded by the same time: it is over, or will be cut at once
        if self.store is None:
            return removed
        try:
            async with asyncio.timeout(self.read_timeout_s):
                stored = await self.store.delete_response(response_id, project=project)
        except (StoreUnavailable, TimeoutError) as exc:
            logger.warning("stored response %s not deleted: %s", response_id, describe(exc))
            raise ServiceUnavailable("Stored responses cannot be deleted now; try again shortly.") from None
        return removed or stored

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the writer once the responses still unsaved are written, or after timeout_s; what is left is
        counted and logged as not stored. save() keeps responses in memory only from here on."""
        self._closing.set()
        task, self._task = self._task, None
        if task is None:
            return
        self._wake.set()
        await asyncio.wait({task}, timeout=timeout_s)
        await tasks.cancel(task)
        if self._unsaved:
            logger.warning("%d stored responses not written to the store at shutdown", len(self._unsaved))
            self._not_stored.inc(len(self._unsaved))
            self._unsaved.clear()
            self._waiting.set(0)

    # -- inside -------------------------------------------------------------------------------------------------

    def _known(self, response_id: str) -> StoredResponse | None:
        found = self._memory.get(response_id)
        if found is not None:
            self._memory.move_to_end(response_id)
            return found
        return self._unsaved.get(response_id)

    def _remember(self, r: StoredResponse, size: int | None = None) -> None:
        """Into memory, the least recently used leaving past memory_max responses or memory_max_mb of their JSON
        (a response with images in its input weighs megabytes). `size`: r.size, when the caller has it."""
        memory, id_ = self._memory, r.id
        if id_ in memory:
            self._forget(id_)  # and in again at the most recent end
        memory[id_] = r
        self._memory_bytes += r.size if size is None else size
        while len(memory) > self.memory_max or self._memory_bytes > self.memory_max_bytes:
            self._forget(next(iter(memory)))

    def _forget(self, response_id: str) -> None:
        """Out of memory (it may still be unsaved)."""
        r = self._memory.pop(response_id, None)
        if r is not None:
            self._memory_bytes -= r.size

    def _forget_unsaved(self, response_id: str) -> None:
        r = self._unsaved.pop(response_id, None)
        if r is not None:
            self._unsaved_bytes -= r.size

    async def _read(self, read: Callable[[], Awaitable[_Found]], response_id: str) -> _Found:
        """One read of the store, within read_timeout_s; ServiceUnavailable when it fails or hangs."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await read()
        except (StoreUnavailable, TimeoutError) as exc:
            logger.warning("stored response %s not read: %s", response_id, describe(exc))
            raise ServiceUnavailable(_UNREADABLE) from None

    async def _read_fresh(self, response_id: str, read: Callable[[], Awaitable[_Found]]) -> _Found:
        """read(), and while it finds nothing and the response's id says it was made less than FRESH_S ago, again
        after a short pause: another worker or replica made it and answered, and its writer has yet to store it
        (a few ms behind the answer: a client that sends the next turn at once to another replica sharing a
        PostgreSQL store found nothing one time in four). Only a miss waits, at most FRESH_S from the id's time."""
        pause = _FIRST_POLL_S
        while True:
            found = await self._read(read, response_id)
            made = id_time_s(response_id.rpartition("_")[2])
            if found or made is None:
                return found
            left = FRESH_S - abs(time.time() - made)
            if left <= 0:
                return found
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL_S)

    def _too_long(self) -> InvalidRequest:
        return InvalidRequest(
            f"The conversation is longer than {self.max_chain} responses; start a new one.",
            param="previous_response_id",
        )

    async def _writer(self) -> None:
        """Write what is unsaved, a batch (one transaction) at a time: a batch that is not full waits linger_s for
        more first, also right after a write (else under load each write's duration set the pace, a commit per few
        responses); after a failed batch, pause (backing off)."""
        delay = 0.0
        while True:
            if not self._unsaved:
                if self._closing.is_set():
                    return
                await tasks.wait_for_wakeup(self._wake, 60.0)
                continue
            if delay:
                if self._closing.is_set():
                    return  # the last try failed: close() counts what is left
                await self._pause(delay * random.uniform(0.5, 1.0))  # closing: one last try at once
            elif len(self._unsaved) < BATCH:
                await self._pause(self.linger_s)  # closing: write at once
            batch = list(itertools.islice(self._unsaved.values(), BATCH))
            over = asyncio.Event()
            # Before the write starts: a deletion from now on waits for it. The writer's batch is the only one
            # being written, so the map is made whole (at C speed) rather than filled and emptied id by id.
            self._writing = dict.fromkeys(itertools.islice(self._unsaved, len(batch)), over)
            try:
                written = await self._write(batch)
            finally:
                self._writing = {}
                over.set()
            delay = 0.0 if written else min(max(delay * 2, _FIRST_BACKOFF_S), self.max_backoff_s)
            self._waiting.set(len(self._unsaved))

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when close() is called."""
        if not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._closing.wait()

    async def _write(self, batch: list[StoredResponse]) -> bool:
        """Responses to the store, one transaction; False when the store failed (they stay unsaved, to be tried
        again). A batch the store refuses for another reason is written again in halves until the responses it
        refuses are alone: those are given up (retrying cannot help), the others written."""
        assert self.store is not None
        batch = [r for r in batch if self._unsaved.get(r.id) is r]  # not deleted, nor saved again since
        if not batch:
            return True
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.store.save_responses(batch)
        except (StoreUnavailable, TimeoutError) as exc:
            self._failures.inc()
            if not self._outage:
                self._outage = True
                logger.warning("stored responses cannot be written (%s): kept in memory and retried", describe(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - refused: split, or give the one refused up
            if len(batch) > 1:
                middle = len(batch) // 2
                return await self._write(batch[:middle]) and await self._write(batch[middle:])
            logger.error("stored response %s refused by the store: %s", batch[0].id, describe(exc))
            self._not_stored.inc()
        else:
            if self._outage:
                self._outage = False
                logger.info("stored responses are written again (%d waiting)", len(self._unsaved) - len(batch))
        unsaved, written = self._unsaved, 0
        for r in batch:  # _forget_unsaved's work, inline: a call per response less
            if unsaved.get(r.id) is r:
                del unsaved[r.id]
                written += r.size
        self._unsaved_bytes -= written
        return True
