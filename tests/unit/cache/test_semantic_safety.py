"""The semantic cache on its labelled safety set (bench/semantic_pairs.py), at the default min_score: each pair's
first turn is cached in a scope of its own, the second looked up. Near misses must never be served the first
turn's answer; paraphrases should be, six times in ten at least. Run with -s to see the figures."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.semantic_pairs import CATEGORIES, PARAPHRASES, PER_CATEGORY, pairs
from gateway.cache.semantic import build_semantic_index
from gateway.config.cache_semantic import SemanticCacheConfig

pytestmark = pytest.mark.anyio
# Near misses the veto is built for; "topic" (another food, pet or drug, in lowercase words) is measured and
# printed, not required: only the embedding and the one-word-swap check stand against it.
REQUIRED = ("number", "name", "date", "unit", "negation", "language")
KNOWN_WRONG = 15


async def served() -> tuple[Counter[str], Counter[str], list[dict[str, str]]]:
    config = SemanticCacheConfig()
    index = build_semantic_index(config)
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    wrong: list[dict[str, str]] = []
    for i, pair in enumerate(pairs()):
        scope = f"pair-{i}"
        await index.add("p", scope, pair["a"], key=f"k{i}", ttl_s=60)
        match = await index.lookup("p", scope, pair["b"], config.min_score)
        totals[pair["category"]] += 1
        if match is not None:
            assert match.key == f"k{i}"
            hits[pair["category"]] += 1
            if pair["kind"] == "near-miss" and pair["category"] in REQUIRED:
                wrong.append(pair)
    await index.close()
    return hits, totals, wrong


async def test_no_near_miss_is_served_and_most_paraphrases_are() -> None:
    hits, totals, wrong = await served()
    assert totals["paraphrase"] == PARAPHRASES >= 500
    assert sum(totals[c] for c in REQUIRED) == len(REQUIRED) * PER_CATEGORY >= 500
    assert set(CATEGORIES) == {*REQUIRED, "topic"}
    near = sum(hits[c] for c in REQUIRED)
    rate = hits["paraphrase"] / totals["paraphrase"]
    print(f"\nsemantic cache at min_score {SemanticCacheConfig().min_score}:")
    by_category = ", ".join(f"{c} {hits[c]}" for c in REQUIRED)
    print(f"  near misses served: {near} of {sum(totals[c] for c in REQUIRED)} ({by_category})")
    print(f"  paraphrases served: {hits['paraphrase']} of {totals['paraphrase']} ({rate:.1%})")
    print(f"  topic swaps served (not required): {hits['topic']} of {totals['topic']}")
    assert wrong == [], wrong[:5]
    assert rate >= 0.6


async def test_all_in_one_scope_no_turn_is_served_another_answer() -> None:
    """Every first turn cached in one scope (1,300 rows, many alike), every second turn looked up: a hit is wrong
    when the row served has another answer id (another intent, value, polarity or language) than the turn."""
    config = SemanticCacheConfig()
    index = build_semantic_index(config)
    items = list(pairs())
    for i, pair in enumerate(items):
        await index.add("p", "pool", pair["a"], key=str(i), ttl_s=60)
    wrong: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for pair in items:
        match = await index.lookup("p", "pool", pair["b"], config.min_score)
        if match is not None:
            served = items[int(match.key)]["a_answer"]
            (right if served == pair["b_answer"] else wrong)[pair["category"]] += 1
    await index.close()
    print(f"\none scope of {len(items)} rows: wrong answers {dict(wrong)}, right answers {dict(right)}")
    # Known wrong answers, outside the topic swaps: each is another question about the same things (the age at
    # death against the birthplace of one person; events against weather in one city on one day; the calories of
    # 4 carrots against 4 potatoes, reworded). The veto reads none of that; only min_score stands in the way, and
    # 0.5 lets these through. A ratchet: the figure may only go down.
    assert sum(n for c, n in wrong.items() if c != "topic") <= KNOWN_WRONG
    assert right["paraphrase"] >= 0.6 * PARAPHRASES
