"""The semantic cache's index: for a request whose last user turn is a rewording of one already answered (same
project, same `scope`: model, system prompt, tools, parameters and earlier turns), the exact-cache key of that
answer.

    index = build_semantic_index(config.cache.semantic, redis_url=..., embed=None)
    match = await index.lookup(project, scope, text, min_score)   # SemanticMatch(key, score) or None
    await index.add(project, scope, text, key, ttl_s)             # after a miss was answered and cached

A lookup embeds the turn (semantic_embed.py), finds the nearest rows of the same project and scope at or above
`min_score` (semantic_index.py, well under a millisecond with 100,000 rows) and returns the best one the false-hit
veto (veto.py) lets through. It never waits on the network with the built-in embedding, never raises, and a turn
longer than `max_chars` is neither cached nor looked up. With the redis backend, every replica writes what it
adds to one Redis stream and reads the others' into its own copy in the background (semantic_redis.py); Redis
being down or hung only delays that sharing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter as PromCounter

from gateway.cache.semantic_embed import DeploymentEmbedder, Embedder, EmbedFn, LocalTurnEmbedder
from gateway.cache.semantic_index import Row, VectorIndex, signatures
from gateway.cache.semantic_redis import RedisSync
from gateway.cache.semantic_text import normalize_turn
from gateway.cache.veto import Fingerprint, fingerprint
from gateway.config.cache_semantic import SemanticCacheConfig

__all__ = ["SemanticIndex", "SemanticMatch", "SemanticStats", "build_semantic_index"]

logger = logging.getLogger("gateway")


class SemanticMatch(NamedTuple):
    key: str  # the exact-cache key whose entry holds the answer to serve
    score: float


@dataclass(slots=True)
class SemanticStats:
    """Counters since start, for metrics and the status API: what lookups found and why the veto refused."""

    lookups: int = 0
    hits: int = 0
    skipped: int = 0  # turns too long (max_chars) or empty: not looked up, not cached
    embed_errors: int = 0  # the embedding deployment failed or timed out: a miss
    vetoed: Counter[str] = field(default_factory=Counter)  # candidates refused, by kind (number, name, ...)


class SemanticIndex:
    """Memory or Redis-shared index of last user turns, per project and scope (module docstring)."""

    def __init__(
        self,
        index: VectorIndex,
        embedder: Embedder,
        *,
        max_chars: int,
        timeout_s: float,
        sync: RedisSync | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.max_chars = max_chars
        self.timeout_s = timeout_s
        self.sync = sync
        self.clock = clock
        self.stats = SemanticStats()

    async def lookup(self, project: str, scope: str, text: str, min_score: float) -> SemanticMatch | None:
        self.stats.lookups += 1
        embedded = await self._embed(text)
        if embedded is None:
            return None
        vector, fp = embedded
        if self.sync is not None:
            self.sync.start()
        found = self.index.lookup(project, scope, vector, signatures(vector)[0], fp, min_score, self.clock())
        if found is None:
            return None
        self.stats.vetoed.update(found.vetoed)
        if found.key is None:
            return None
        self.stats.hits += 1
        return SemanticMatch(found.key, found.score)

    async def add(self, project: str, scope: str, text: str, key: str, ttl_s: float) -> None:
        embedded = await self._embed(text)
        if embedded is None or ttl_s <= 0:
            return
        vector, fp = embedded
        row = Row(project, scope, key, vector, signatures(vector)[0], fp, self.clock() + ttl_s)
        self.index.add(row)
        if self.sync is not None:
            self.sync.start()
            self.sync.publish(row)

    async def purge(self, project: str, scope: str | None = None) -> int:
        """Rows removed here; with Redis, every replica removes them when it reads the purge from the stream."""
        removed, rest = self.index.purge(project, scope)
        if self.sync is not None:
            self.sync.start()
            self.sync.publish_purge(project, scope)
        for _ in rest:
            await asyncio.sleep(0)
        return removed

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.close()

    def health(self) -> str:
        """For /health/ready: "" while the index is shared as configured, else why not."""
        if self.sync is None or self.sync.healthy:
            return ""
        errors = self.sync.errors
        return f"semantic index not shared: Redis unavailable, lookups from this copy ({errors} failed rounds)"

    async def _embed(self, text: str) -> tuple[npt.NDArray[np.float32], Fingerprint] | None:
        if len(text) > self.max_chars or not text.strip():
            self.stats.skipped += 1
            return None
        normalized = normalize_turn(text)
        if isinstance(self.embedder, LocalTurnEmbedder):
            vector = self.embedder.embed_now(text, normalized)
        else:
            try:
                async with asyncio.timeout(self.timeout_s):
                    vector = await self.embedder.embed(text)
            except Exception as exc:  # noqa: BLE001 - a cache never fails the request: a failed embedding is a miss
                self.stats.embed_errors += 1
                logger.warning("semantic cache: embedding failed: %r", exc)
                return None
        if not vector.any():
            self.stats.skipped += 1
            return None
        return vector, fingerprint(text, normalized)


def build_semantic_index(
    config: SemanticCacheConfig,
    *,
    redis_url: str = "",
    embed: EmbedFn | None = None,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
) -> SemanticIndex:
    """The index `config` describes. `redis_url`: the Redis when config.redis_url is empty (the state backend's);
    `embed`: the embedding deployment config.embedding_model names, routed by the caller."""
    embedder: Embedder = LocalTurnEmbedder() if embed is None else DeploymentEmbedder(embed, config.embedding_model)
    index = VectorIndex(max_entries=config.max_entries, max_projects=config.max_projects)
    sync = None
    if config.backend == "redis":
        on_error = None
        if registry is not None:
            on_error = PromCounter(
                "gateway_cache_semantic_sync_errors",
                "Rounds in which the semantic cache could not share its index through Redis (lookups go on from "
                "this replica's copy; /health/ready says so).",
                registry=registry,
            ).inc
        url = config.redis_url or redis_url
        if not url:
            raise ValueError("the semantic cache's redis backend needs a Redis URL")
        sync = RedisSync(
            url,
            index,
            embedder=embedder.name,
            stream_max=config.stream_max,
            interval_s=config.sync_interval_s,
            timeout_s=config.timeout_s,
            clock=clock,
            replica=os.urandom(8).hex(),
            queue_max=config.queue_max,
            on_error=on_error,
        )
    return SemanticIndex(
        index, embedder, max_chars=config.max_chars, timeout_s=config.timeout_s, sync=sync, clock=clock
    )
