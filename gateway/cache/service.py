"""ResponseCache: the cache as the filter and the admin API use it — a backend behind a guard, the semantic index
when there is one, the writer that stores answers after they are sent, and the cache's metrics.

The guard: a backend call that fails or hangs (bounded by `cache.timeout_ms`) is a miss, never an error the
client sees. The cache is then skipped for `cache.retry_interval_s` (requests go straight on, not one waits for a
Redis that is down), with one log line, `gateway_cache_available` 0 and /health/ready saying so; the first request
after that tries again, and a success makes it available again.

Writes never hold a request: an answer to keep is put on a bounded queue and written by one background task once
the request's own work is done (the answer sent). A full queue drops the write and counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

from prometheus_client import Counter, Gauge

from gateway.cache.backends import CacheBackend, MemoryBackend, RedisBackend
from gateway.cache.entry import ENTRY_OVERHEAD, Entry, EntryFields
from gateway.cache.index import Match, SemanticLookup
from gateway.config.cache import CacheConfig
from gateway.tasks import cancel, spawn
from gateway.telemetry.metrics import Metrics
from gateway.types import Clock

logger = logging.getLogger("gateway.cache")
_new_tuple = tuple.__new__
_epoch = time.time
RESULTS = ("hit", "semantic-hit", "miss", "bypass")
_SEMANTIC_ADD_S = 10.0
_PURGE_S = 30.0  # a purge scans the backend's keys: longer than a request's call, still bounded


class Write(NamedTuple):
    key: str
    entry: Entry
    ttl_s: float
    semantic: tuple[str, str] | None  # (scope, text) to add to the semantic index


class ResponseCache:
    def __init__(
        self,
        config: CacheConfig,
        metrics: Metrics,
        *,
        backend: CacheBackend | None = None,
        semantic: SemanticLookup | None = None,
        semantic_min_score: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        if backend is None:
            if config.backend == "memory":
                backend = MemoryBackend(int(config.memory_max_mb * 1_048_576))
            else:
                backend = RedisBackend(config.backend, timeout_s=config.timeout_ms / 1000)
        self.backend = backend
        # The memory backend is written at once (no I/O: a few dict operations); a shared one by the writer.
        self.memory = backend if isinstance(backend, MemoryBackend) else None
        self.semantic = semantic
        # A semantic hit's least score when no policy sets one: the index's configured min_score, which whoever
        # builds the index passes (cache.semantic.min_score); 1.0 until then.
        self.semantic_min_score = semantic_min_score
        self.clock = clock
        self.max_entry_bytes = int(config.max_entry_kb * 1024)
        self.error = ""  # why the backend is skipped now; "" while it answers
        self._retry_at = 0.0
        self._queue: asyncio.Queue[Write] | None = None
        self._task: asyncio.Task[None] | None = None
        registry = metrics.registry
        # The request path's counters add up in plain Python, written to the metrics when they are read or flushed.
        results = Counter(
            "gateway_cache_requests", "Requests the response cache looked at, by result.", ["result"],
            registry=registry,
        )  # fmt: skip
        self.results = {result: metrics.counter(results.labels(result)) for result in RESULTS}
        self.bytes_served = metrics.counter(
            Counter("gateway_cache_served_bytes", "Bytes of answers served from the cache.", registry=registry)
        )
        self.bytes_stored = metrics.counter(
            Counter("gateway_cache_stored_bytes", "Bytes of answers written to the cache.", registry=registry)
        )
        self.memory_bytes = Gauge(
            "gateway_cache_memory_bytes", "Bytes the memory backend holds.", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        memory = self.memory
        if memory is not None:  # read when the metrics are: not set on every answer kept
            metrics.level(self.memory_bytes, lambda: memory.bytes)
        errors = Counter(
            "gateway_cache_errors",
            "Cache operations that failed: unavailable (the backend failed or hung: skipped), dropped (the write "
            "queue was full), too_large (an answer past cache.max_entry_kb).",
            ["reason"],
            registry=registry,
        )
        self.errors = {reason: errors.labels(reason) for reason in ("unavailable", "dropped", "too_large")}
        self.available = Gauge(
            "gateway_cache_available", "1 while the cache's backend answers, 0 while it is skipped.",
            registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.available.set(1)

    # -- the request path -------------------------------------------------------------------------------------------

    def get_now(self, project: str, key: str) -> Entry | None:
        """The memory backend's entry, without awaiting (the cache's memory must be on). As `get`: never another
        project's answer, whatever the digest."""
        assert self.memory is not None
        entry = self.memory.get_now(key)
        return entry if entry is None or entry.project == project else None

    async def get(self, project: str, model: str, key: str) -> Entry | None:
        if self.memory is not None:
            return self.get_now(project, key)
        if self.error and self.clock() < self._retry_at:
            return None
        try:
            entry = await self.backend.get(project, model, key)
        except Exception as exc:  # noqa: BLE001 - any failure of the backend is a miss, and the cache is skipped
            self._failed(exc)
            return None
        self._answered()
        if entry is not None and entry.project != project:  # a digest collision, in theory: never another's answer
            return None
        return entry

    async def lookup_similar(self, project: str, scope: str, text: str, min_score: float) -> Match | None:
        semantic = self.semantic
        if semantic is None or (self.error and self.clock() < self._retry_at):
            return None
        try:
            return await semantic.lookup(project, scope, text, min_score)
        except Exception:  # a failed lookup is a miss; the index reports its own state
            self.errors["unavailable"].inc()
            logger.debug("semantic lookup failed", exc_info=True)
            return None

    def keep(self, key: str, entry: EntryFields, ttl_s: float, semantic: tuple[str, str] | None) -> None:
        """Store an answer once the request is done: at once in memory, else through the writer's queue. `entry`:
        an Entry, or its fields as a plain tuple (the cache filter's: what the memory backend holds)."""
        size = len(entry[0]) + ENTRY_OVERHEAD
        if size > self.max_entry_bytes:
            self.errors["too_large"].inc()
            return
        memory = self.memory
        if memory is not None and semantic is None:
            entries = memory.entries
            if key not in entries and memory.bytes + size <= memory.max_bytes and type(entry) is tuple:
                # put_now's common case, written out (no entry replaced, none evicted): once per answer kept. The
                # expiry from the entry's own time (its `created`, just read) when the backend's clock is the epoch's:
                # one clock call less.
                clock = memory.clock
                entries[key] = (entry, (entry[2] if clock is _epoch else clock()) + ttl_s)
                memory.bytes += size
            else:
                memory.put_now(key, entry, ttl_s, size)
            self.bytes_stored.value += size
            return
        queue = self._queue
        if queue is None or queue.full():
            self.errors["dropped"].inc()
            return
        queue.put_nowait(Write(key, entry if type(entry) is Entry else _new_tuple(Entry, entry), ttl_s, semantic))

    def count(self, result: str) -> None:
        self.results[result].value += 1

    # -- the backend's health ---------------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.errors["unavailable"].inc()
        self._retry_at = self.clock() + self.config.retry_interval_s
        if not self.error:
            logger.warning(
                "cache backend %s failed, the cache is skipped for %gs at a time until it answers: %s: %s",
                self.backend.name, self.config.retry_interval_s, type(exc).__name__, exc,
            )  # fmt: skip
            self.available.set(0)
        self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _answered(self) -> None:
        if self.error:
            logger.warning("cache backend %s answers again: the cache is used again", self.backend.name)
            self.error = ""
            self.available.set(1)

    def status(self) -> str:
        """For /health/ready: ok, or why the cache is skipped now (or its semantic index not shared)."""
        if self.error:
            return f"skipped: {self.error}"
        return (self.semantic.health() if self.semantic is not None else "") or "ok"

    # -- the admin API -------------------------------------------------------------------------------------------

    async def purge(self, project: str | None, model: str | None, key: str | None) -> int:
        """Remove the entries matching every name given, from the backend (and the project's semantic index when a
        whole project goes). Raises the backend's error: the admin is told, not a request."""
        async with asyncio.timeout(_PURGE_S):
            removed = await self.backend.purge(project, model, key)
        if self.semantic is not None and project is not None and model is None and key is None:
            await self.semantic.purge(project)
        return removed

    # -- the writer ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._queue = asyncio.Queue(self.config.write_queue_size)
        self._task = spawn(self._write(), name="cache-writer")

    async def _write(self) -> None:
        assert self._queue is not None
        queue = self._queue
        timeout_s = self.config.timeout_ms / 1000
        while True:
            write = await queue.get()
            if self.error and self.clock() < self._retry_at:
                self.errors["dropped"].inc()
                continue
            try:
                async with asyncio.timeout(timeout_s * 2):
                    await self.backend.put(write.key, write.entry, write.ttl_s)
            except Exception as exc:  # noqa: BLE001 - a write that fails is an answer not cached, and counted
                self._failed(exc)
                continue
            self._answered()
            self.bytes_stored.value += write.entry.size
            if write.semantic is not None and self.semantic is not None:
                scope, text = write.semantic
                try:  # an embedding may be computed: bounded apart from the backend's calls
                    async with asyncio.timeout(_SEMANTIC_ADD_S):
                        await self.semantic.add(write.entry.project, scope, text, write.key, write.ttl_s)
                except Exception:  # the exact entry stands; the index reports its own state
                    self.errors["unavailable"].inc()
                    logger.debug("semantic add failed", exc_info=True)

    async def close(self) -> None:
        await cancel(self._task)
        if self.semantic is not None:
            await self.semantic.close()
        await self.backend.close()
