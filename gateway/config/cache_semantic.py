"""The semantic cache's part of the typed config (gateway/cache/semantic.py): the index of last user turns that
finds a cached answer for a reworded question. It sits under `cache.semantic` in gateway.yaml; the policy action
`cache: {mode: semantic, min_score}` turns it on per project and may raise `min_score`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config.redis_url import is_cluster, is_redis, redis_url_problem

SemanticBackend = Literal["memory", "redis"]


@dataclass(frozen=True, slots=True)
class SemanticCacheConfig:
    # memory: this process only. redis: every replica writes what it adds to one Redis stream and reads the
    # others' from it into its own copy, so lookups never wait on the network (README, "Semantic cache").
    backend: SemanticBackend = "memory"
    # The Redis of the redis backend (redis://host:port/db); empty: the caller's (the state backend's) Redis.
    redis_url: str = field(default="", repr=False)
    # Cosine similarity (of the built-in embedding) at and above which a cached turn may answer, if the veto lets
    # it. At 0.5 the labelled set (bench/semantic_pairs.py) gets 0 of 600 near misses served and 62% of the
    # paraphrases; at 0.7, 22%. The veto, not the score, is what refuses another number, name, date or unit.
    min_score: float = 0.5
    # Entries per project (the least recently used leave first), and projects kept (idem).
    max_entries: int = 10_000
    max_projects: int = 32
    # A last user turn longer than this is neither cached nor looked up: the veto reads the whole text (embedding
    # and fingerprint cost ~0.5 µs a character), and a long turn is rarely asked again in other words.
    max_chars: int = 1000
    # A model group of this gateway that serves embeddings, used instead of the built-in hashed n-gram embedding.
    embedding_model: str = ""
    # Redis backend: how often each replica reads what the others added; the stream's length (entries of all
    # projects; older ones are trimmed, and a replica that starts later does not see them); and how long any
    # call to Redis may take before it counts as failed (the cache carries on from its copy).
    sync_interval_s: float = 0.2
    stream_max: int = 100_000
    timeout_s: float = 0.5
    # Rows waiting to be written while Redis is away, at most; beyond, they stay in this replica only (counted).
    queue_max: int = 10_000


def check_semantic_cache(config: SemanticCacheConfig, path: str, problems: list[tuple[str, str]]) -> None:
    """Append (key path, problem) for each value that cannot work; `path` is where the section sits."""
    if not 0.0 < config.min_score <= 1.0:
        problems.append((f"{path}.min_score", "must be above 0 and at most 1"))
    positive = ("max_entries", "max_projects", "max_chars", "sync_interval_s", "stream_max", "timeout_s", "queue_max")
    for key in positive:
        if not getattr(config, key) > 0:
            problems.append((f"{path}.{key}", "must be positive"))
    if config.redis_url and not (is_redis(config.redis_url) or config.redis_url.startswith("unix://")):
        problems.append((f"{path}.redis_url", "must be a redis://, rediss://, unix:// or redis+cluster:// URL"))
    elif is_cluster(config.redis_url) and (problem := redis_url_problem(config.redis_url)):
        problems.append((f"{path}.redis_url", problem))


def parse_semantic_cache(
    data: dict[str, Any], path: str = "cache.semantic"
) -> tuple[SemanticCacheConfig, list[tuple[str, str]]]:
    """The section from its YAML mapping, with the problems found (unknown keys, wrong types, bad values), the way
    load_config converts every section. Standalone until the section is nested in GatewayConfig."""
    # Imported here: gateway.config imports this module to build GatewayConfig.
    from gateway.config import _convert

    problems: list[tuple[str, str]] = []
    converted = _convert(SemanticCacheConfig, data, path, problems)
    config = converted if isinstance(converted, SemanticCacheConfig) else SemanticCacheConfig()
    check_semantic_cache(config, path, problems)
    return config, problems
