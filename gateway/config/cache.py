"""The response cache's part of the typed config (gateway/cache/): where entries live, how long, how big, and
which requests may be served from it. gateway/config/__init__.py loads it as part of GatewayConfig.

The cache is off until a project turns it on: a policy's `cache` action, or the `cache` feature flag
(off | exact | semantic). These settings say how it behaves once on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gateway.config.cache_semantic import SemanticCacheConfig, check_semantic_cache
from gateway.config.redis_url import is_redis, redis_url_problem

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

CacheMode = Literal["off", "exact", "semantic"]
CACHE_MODES: tuple[CacheMode, ...] = ("off", "exact", "semantic")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # memory: per process, bounded by memory_max_mb, least recently used first out. redis://host:port/db (or
    # redis+cluster://host:port[,host:port...]): shared by every worker and replica, entries expire by their TTL.
    backend: str = field(default="memory", repr=False)
    ttl_s: float = 3600.0  # an entry's life when the policy's action sets none
    memory_max_mb: float = 256.0  # the memory backend's bound, answers' bytes counted
    max_entry_kb: float = 1024.0  # an answer bigger than this is not cached (Redis's memory is shared)
    # Only answers a request asks to be deterministic (temperature 0, or a seed) are cached and served; false: any.
    # Embeddings are deterministic whatever the request says.
    deterministic_only: bool = True
    # A rate limit counts a hit as a request; its tokens count too only when this is true (no upstream spent them).
    count_hit_tokens: bool = False
    # A Redis call with no answer within this long has failed: the request goes on without the cache.
    timeout_ms: float = 100.0
    # After a Redis failure the cache is skipped for this long, then tried again with the next request.
    retry_interval_s: float = 5.0
    # Answers waiting to be written (after they are sent); beyond, they are not cached, and counted.
    write_queue_size: int = 1000
    # The semantic index (mode semantic): its backend, the default least score of a semantic hit (a policy's
    # min_score may raise it, never lower it), its bounds (gateway/config/cache_semantic.py).
    semantic: SemanticCacheConfig = field(default_factory=SemanticCacheConfig)


def check_cache(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    cache = config.cache
    if problem := redis_url_problem(cache.backend):
        problems.append(("cache.backend", problem))
    for key in ("ttl_s", "memory_max_mb", "max_entry_kb", "timeout_ms", "retry_interval_s", "write_queue_size"):
        if not getattr(cache, key) > 0:
            problems.append((f"cache.{key}", "must be positive"))
    check_semantic_cache(cache.semantic, "cache.semantic", problems)
    if cache.semantic.backend == "redis" and not semantic_redis_url(config):
        problems.append(("cache.semantic.redis_url", "the redis backend needs one, or a redis:// state.backend"))


def semantic_redis_url(config: GatewayConfig) -> str:
    """The Redis the semantic index shares itself through: its own redis_url, else the state backend's; "" if
    neither is a Redis."""
    state = config.state.backend
    return config.cache.semantic.redis_url or (state if is_redis(state) or state.startswith("unix://") else "")
