"""The semantic cache's lookup time with ENTRIES rows in one project and ONE scope (the worst case: every row is
a candidate), as the request path sees it: `await SemanticIndex.lookup()`, embedding, fingerprint and veto
included, with the built-in embedding.

    .venv/bin/python bench/semantic_lookup.py            # ENTRIES=100000 LOOKUPS=3000 MIN_SCORE=<default>

The rows are turns of the labelled set's intents (bench/semantic_pairs.py) with random values, those whose values
are names and topic words (no number, date, unit or negation: all rows in the one bucket a lookup searches), each
with a made-up reference word: near neighbours of one another, so each lookup finds many candidates above
min_score and offers several to the veto. Lookups are of three kinds in turn: a paraphrase of a cached turn
(usually a hit), a near miss of one (another value: candidates the veto refuses) and an unrelated question. Prints
p50/p99/max per kind and overall, in microseconds (wall time, and the thread's CPU time, which leaves out the
moments another process had the core), and the hit rate per kind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.semantic_pairs import INTENTS, _values
from gateway.cache.semantic import build_semantic_index
from gateway.config.cache_semantic import SemanticCacheConfig

ENTRIES = int(os.environ.get("ENTRIES", "100000"))
LOOKUPS = int(os.environ.get("LOOKUPS", "3000"))
UNRELATED = [
    "Write a haiku about autumn leaves falling on a quiet pond",
    "What are the main differences between TCP and UDP?",
    "Summarize the plot of a heist movie in three sentences",
    "Why do cats purr when they are happy?",
    "Explain the difference between a list and a tuple",
]


# Intents whose values are names and topic words only: no number, date, unit or negation, so every row falls in
# one bucket of the veto's (veto.bucket_of) and the search has all 100,000 to go through.
ONE_BUCKET = [i for i in INTENTS if all(category in ("name", "topic") for category, _ in i.slots.values())]
SYLLABLES = ["ka", "lo", "mi", "ru", "te", "sa", "vo", "ni", "pe", "da", "zu", "fi"]


def turn(rng: random.Random) -> tuple[str, str, str]:
    """(a cached turn, a paraphrase of it, a near miss of it): same intent, values drawn at random, and a made-up
    reference word so that 100,000 rows are 100,000 different turns."""
    intent = rng.choice(ONE_BUCKET)
    values = _values(intent, rng)
    a, b = rng.sample(intent.wordings, 2)
    # Capitalized, as a reference or a product name would be: a name to the veto, so a row of another reference
    # is refused (in lowercase it would be a word like any other, and "served" would count such rows).
    ref = " (ref " + "".join(rng.choice(SYLLABLES) for _ in range(6)).capitalize() + ")"
    other = dict(values)
    slot = rng.choice(list(intent.slots))
    other[slot] = rng.choice([c for c in intent.slots[slot][1] if c not in values.values()])
    return a.format(**values) + ref, b.format(**values) + ref, a.format(**other) + ref


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6  # noqa: E731
    return f"p50 {pick(0.5):7.0f}  p99 {pick(0.99):7.0f}  max {samples[-1] * 1e6:7.0f} µs"


async def main() -> None:
    config = SemanticCacheConfig(max_entries=ENTRIES)
    min_score = float(os.environ.get("MIN_SCORE", config.min_score))
    index = build_semantic_index(config)
    rng = random.Random(7)
    probes: list[tuple[str, str]] = []
    start = time.perf_counter()
    for i in range(ENTRIES):
        cached, paraphrase, near = turn(rng)
        await index.add("p", "one-scope", cached, key=f"k{i}", ttl_s=3600)
        if i % (ENTRIES // 1000 or 1) == 0:
            probes.append((paraphrase, near))
    print(f"added {ENTRIES} rows in {time.perf_counter() - start:.1f} s ({index.index.entries('p')} kept)")
    kinds: dict[str, list[float]] = {"paraphrase": [], "near miss": [], "unrelated": []}
    cpu: list[float] = []
    hits = dict.fromkeys(kinds, 0)
    gc.collect()
    gc.freeze()  # the gateway's worker freezes its start-up objects too: collections skip them
    for n in range(LOOKUPS):
        paraphrase, near = probes[n % len(probes)]
        kind = ("paraphrase", "near miss", "unrelated")[n % 3]
        text = {"paraphrase": paraphrase, "near miss": near, "unrelated": UNRELATED[n % len(UNRELATED)]}[kind]
        t, c = time.perf_counter(), time.thread_time()
        match = await index.lookup("p", "one-scope", text, min_score)
        kinds[kind].append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        hits[kind] += match is not None
    print(f"lookups at min_score {min_score} with {ENTRIES} rows in one scope:")
    for kind, samples in kinds.items():
        print(f"  {kind:10s} {percentiles(samples)}  served {hits[kind]}/{len(samples)}")
    print(f"  {'all':10s} {percentiles([s for v in kinds.values() for s in v])}")
    # CPU time of this thread: the wall time above also counts the moments the OS ran another process instead
    # (on a busy 2-core machine, several milliseconds at a time). Its resolution is the kernel's tick or better.
    print(f"  {'all (cpu)':10s} {percentiles(cpu)}")
    print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  veto refusals: {dict(index.stats.vetoed)}")
    await index.close()


if __name__ == "__main__":
    asyncio.run(main())
