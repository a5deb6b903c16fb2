"""The semantic index through its interface (memory backend): per project and scope, bounded, expiring, purged,
never raising into the request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from gateway.cache.semantic import SemanticMatch, build_semantic_index
from gateway.cache.semantic_index import CLEANUP_STEP, RERANK
from gateway.config.cache_semantic import SemanticCacheConfig, parse_semantic_cache
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio
# Words that make turns alike but for one word (each another question: the one-word-swap veto refuses them).
WORDS = [
    f"{a}{b}"
    for a in ("ur", "fl", "sn", "gr", "bl", "cr", "pl", "st")
    for b in ("gent", "oppy", "azzy", "iffy", "unky")
]
Q = "What's the weather going to be in Paris on Friday?"
PARAPHRASE = "On Friday, what will the weather be like in Paris?"


def make(clock: FakeClock | None = None, **overrides: object):  # type: ignore[no-untyped-def]
    config = SemanticCacheConfig(**overrides)  # type: ignore[arg-type]
    return build_semantic_index(config, clock=(clock or FakeClock()).time)


async def test_a_paraphrase_finds_the_key_with_its_score() -> None:
    index = make()
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    match = await index.lookup("p1", "s", PARAPHRASE, 0.5)
    assert isinstance(match, SemanticMatch)
    assert match.key == "k1"
    assert 0.5 <= match.score <= 1.0
    assert (await index.lookup("p1", "s", Q, 0.5)) == SemanticMatch("k1", pytest.approx(1.0, abs=0.01))
    assert index.stats.hits == 2


async def test_nothing_crosses_projects_or_scopes() -> None:
    index = make()
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    assert await index.lookup("p2", "s", Q, 0.5) is None
    assert await index.lookup("p1", "other-scope", Q, 0.5) is None


async def test_a_near_miss_is_refused_and_counted_by_kind() -> None:
    index = make()
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    assert await index.lookup("p1", "s", Q.replace("Paris", "Lyon"), 0.5) is None
    assert index.stats.vetoed == {"name": 1}
    # Another date (or number, unit, negation): the row is in another bucket, never even a candidate.
    assert await index.lookup("p1", "s", Q.replace("Friday", "Saturday"), 0.5) is None
    assert index.stats.vetoed == {"name": 1}


async def test_the_best_candidate_the_veto_lets_through_wins() -> None:
    index = make()
    await index.add("p1", "s", "What's the weather in Paris on Saturday?", key="saturday", ttl_s=60)
    await index.add("p1", "s", "Paris weather forecast for Friday", key="friday", ttl_s=60)
    match = await index.lookup("p1", "s", "What's the weather in Paris on Friday?", 0.3)
    assert match is not None
    assert match.key == "friday"


async def test_min_score_is_the_callers() -> None:
    index = make()
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    assert await index.lookup("p1", "s", PARAPHRASE, 0.99) is None


async def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    index = make(clock)
    await index.add("p1", "s", Q, key="k1", ttl_s=10)
    clock.advance(9)
    assert await index.lookup("p1", "s", Q, 0.5) is not None
    clock.advance(2)
    assert await index.lookup("p1", "s", Q, 0.5) is None
    assert index.index.entries("p1") == 0  # removed when found expired


async def test_each_project_keeps_its_most_recently_used_entries() -> None:
    index = make(max_entries=3)
    for i in range(3):
        await index.add("p1", "s", f"How many calories are in {i + 2} eggs?", key=f"k{i}", ttl_s=60)
    assert await index.lookup("p1", "s", "How many calories are in 2 eggs?", 0.5) is not None  # k0 now recent
    await index.add("p1", "s", "How many calories are in 9 eggs?", key="k3", ttl_s=60)
    assert index.index.entries("p1") == 3
    assert await index.lookup("p1", "s", "How many calories are in 3 eggs?", 0.5) is None  # k1 left first
    assert (await index.lookup("p1", "s", "How many calories are in 2 eggs?", 0.5)) is not None
    assert index.index.evicted == 1


async def test_projects_beyond_the_cap_leave_least_recently_used_first() -> None:
    index = make(max_projects=2)
    for project in ("a", "b", "c"):
        await index.add(project, "s", Q, key=project, ttl_s=60)
    assert await index.lookup("a", "s", Q, 0.5) is None
    assert await index.lookup("c", "s", Q, 0.5) is not None


async def test_the_same_key_added_again_replaces_its_row() -> None:
    index = make()
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    assert index.index.entries("p1") == 1


async def test_purge_by_project_and_by_scope() -> None:
    index = make()
    await index.add("p1", "s1", Q, key="a", ttl_s=60)
    await index.add("p1", "s2", Q, key="b", ttl_s=60)
    await index.add("p2", "s1", Q, key="c", ttl_s=60)
    assert await index.purge("p1", "s1") == 1
    assert await index.lookup("p1", "s1", Q, 0.5) is None
    assert await index.lookup("p1", "s2", Q, 0.5) is not None
    assert await index.purge("p1") == 1
    assert await index.lookup("p2", "s1", Q, 0.5) is not None


async def test_long_or_empty_turns_are_neither_cached_nor_looked_up() -> None:
    index = make(max_chars=100)
    long_turn = "Tell me about Paris. " * 10
    await index.add("p1", "s", long_turn, key="k1", ttl_s=60)
    await index.add("p1", "s", "  ?! ", key="k2", ttl_s=60)
    assert index.index.entries("p1") == 0
    assert await index.lookup("p1", "s", long_turn, 0.5) is None
    assert index.stats.skipped == 3


async def test_the_nearest_rows_are_found_among_many_alike() -> None:
    # Many more rows than RERANK: alike but for a number (each in a bucket of its own), and alike but for a word
    # (all in one bucket: the signatures must bring the right one up).
    index = make()
    for n in range(10 * RERANK):
        await index.add("p1", "s", f"Summarize support ticket {1000 + n} for the weekly report", key=f"t{n}", ttl_s=60)
    for n, word in enumerate(WORDS):
        await index.add("p1", "s", f"Summarize the {word} support tickets for the weekly report", key=f"w{n}", ttl_s=60)
    match = await index.lookup("p1", "s", "Please summarize support ticket 1100 for the weekly report", 0.5)
    assert match is not None
    assert match.key == "t100"
    match = await index.lookup("p1", "s", "Please summarize the urgent support tickets for the weekly report", 0.5)
    assert match is not None
    assert match.key == f"w{WORDS.index('urgent')}"


async def test_an_embedding_deployment_is_used_and_its_failure_is_a_miss() -> None:
    calls: list[Sequence[str]] = []
    failing = False

    async def embed(texts: Sequence[str]) -> np.ndarray:
        calls.append(texts)
        if failing:
            raise ConnectionError("embedding deployment down")
        return np.ones((len(texts), 8), dtype=np.float32)  # every text alike: only the veto tells them apart

    config = SemanticCacheConfig(embedding_model="embedder")
    index = build_semantic_index(config, embed=embed)
    await index.add("p1", "s", Q, key="k1", ttl_s=60)
    assert (await index.lookup("p1", "s", PARAPHRASE, 0.9)) is not None
    assert await index.lookup("p1", "s", Q.replace("Paris", "Rome"), 0.9) is None  # vetoed
    failing = True
    assert await index.lookup("p1", "s", Q, 0.9) is None
    assert index.stats.embed_errors == 1
    assert len(calls) == 4


def test_the_config_section_parses_with_its_problems_named() -> None:
    config, problems = parse_semantic_cache({"backend": "redis", "min_score": 0.8, "max_entries": 500})
    assert (config.backend, config.min_score, config.max_entries, problems) == ("redis", 0.8, 500, [])
    _, problems = parse_semantic_cache({"backend": "disk", "min_score": 1.5, "sync_interval_s": 0, "x": 1})
    keys = sorted(path for path, _ in problems)
    assert keys == ["cache.semantic.backend", "cache.semantic.x"]  # conversion problems first: defaults checked
    _, problems = parse_semantic_cache({"min_score": 1.5, "sync_interval_s": 0, "redis_url": "http://x"})
    assert sorted(path for path, _ in problems) == [
        "cache.semantic.min_score",
        "cache.semantic.redis_url",
        "cache.semantic.sync_interval_s",
    ]


async def test_a_big_purge_is_done_in_steps_and_leaves_other_scopes() -> None:
    index = make(max_entries=10_000)
    n = 2 * CLEANUP_STEP + 1
    for i in range(n):
        await index.add("p1", "big", f"Summarize support ticket {i} for the weekly report", key=f"k{i}", ttl_s=60)
    await index.add("p1", "small", Q, key="kept", ttl_s=60)
    removed, rest = index.index.purge("p1", "big")
    assert removed == n
    assert await index.lookup("p1", "big", "Summarize support ticket 7 for the weekly report", 0.5) is None
    assert sum(1 for _ in rest) == n // CLEANUP_STEP  # a yield after every CLEANUP_STEP rows
    assert index.index.entries("p1") == 1
    assert await index.lookup("p1", "small", Q, 0.5) is not None
    removed, rest = index.index.purge("p1")
    assert (removed, len(list(rest)) >= 1, index.index.entries("p1")) == (1, True, 0)
