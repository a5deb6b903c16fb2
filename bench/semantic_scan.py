"""A wider safety scan than the test's: 3,000 near-miss draws per category from bench/semantic_pairs.py's
generator (another seed, duplicates dropped), each pair scored by the built-in embedding and the veto at
MIN_SCORE (default: the config's). Prints how many pairs of each category would be served, and the first few.

    .venv/bin/python bench/semantic_scan.py          # ~1 minute
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.semantic_pairs import CATEGORIES, _near_miss
from gateway.cache.semantic_embed import LocalTurnEmbedder
from gateway.cache.veto import fingerprint, veto
from gateway.config.cache_semantic import SemanticCacheConfig

DRAWS = int(os.environ.get("DRAWS", "3000"))


def main() -> None:
    min_score = float(os.environ.get("MIN_SCORE", SemanticCacheConfig().min_score))
    embedder = LocalTurnEmbedder()
    served: Counter[str] = Counter()
    total: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    rng = random.Random(99)
    for category in CATEGORIES:
        for _ in range(DRAWS):
            turns = _near_miss(category, rng)
            if turns is None:
                continue
            pair = (turns[0][0], turns[1][0])
            if pair in seen or pair[0] == pair[1]:
                continue
            seen.add(pair)
            total[category] += 1
            score = float(embedder.embed_now(pair[0]) @ embedder.embed_now(pair[1]))
            if score >= min_score and veto(fingerprint(pair[0]), fingerprint(pair[1])) is None:
                served[category] += 1
                if served[category] <= 3:
                    print(f"served ({category}, {score:.2f}): {pair[0]!r} | {pair[1]!r}")
    for category in CATEGORIES:
        print(f"{category:10s} {served[category]:5d} of {total[category]:5d} near misses served at {min_score}")


if __name__ == "__main__":
    main()
