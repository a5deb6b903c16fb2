"""Prompt similarity: quality of the local embedding on a hand-made set, per-project windows, duplicates, the queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.telemetry.embedding import LocalEmbedding, cosine
from gateway.telemetry.similarity import SimilarityItem, SimilarityWorker, normalise, prompt_hash, prompt_text

BASE = "How do I reset my password?"
CLOSE = [  # paraphrases and near-duplicates of BASE
    "how can I reset my password",
    "How do I reset my pasword?",  # a typo
    "how do i reset my password please",
    "I forgot my password, how do I reset it?",
    "How do I change my password?",
]
UNRELATED = [
    "What is the capital of France?",
    "Write a poem about the sea",
    "Translate this sentence to German: good morning",
    "Explain quantum computing in simple terms",
    "Summarise the attached quarterly sales report in three bullet points",
]


class Store:
    def __init__(self, fail: bool = False) -> None:
        self.rows: list[dict] = []
        self.fail = fail

    async def write_similarity(self, rows):
        if self.fail:
            raise ConnectionError("store down")
        self.rows.extend(rows)


def item(i: int | str, text: str, project: str = "p1", model: str = "m") -> SimilarityItem:
    return SimilarityItem(
        id=f"r{i}", ts=1000.0 + (i if isinstance(i, int) else 0), project=project, model=model, text=text
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_paraphrases_and_near_duplicates_score_high_and_unrelated_prompts_low():
    emb = LocalEmbedding()
    vectors = emb.embed([BASE, *CLOSE, *UNRELATED])
    sims = cosine(vectors[0], vectors[1:])
    close, unrelated = sims[: len(CLOSE)], sims[len(CLOSE) :]
    assert close.min() > 0.55, dict(zip(CLOSE, close.round(3), strict=True))
    assert unrelated.max() < 0.2, dict(zip(UNRELATED, unrelated.round(3), strict=True))
    assert sims[1] > 0.8  # the typo
    # Every close one is nearer than every unrelated one, and unrelated prompts are far from each other too.
    assert close.min() > unrelated.max() + 0.3
    between = cosine(vectors[1 + len(CLOSE) :], vectors[1 + len(CLOSE) :])
    assert between[~np.eye(len(UNRELATED), dtype=bool)].max() < 0.25


def test_prompt_text_takes_what_the_user_sent_and_truncates():
    chat = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]},
        ]
    }
    assert prompt_text("chat/completions", chat) == "first\nsecond"
    assert prompt_text("chat/completions", chat, max_chars=3) == "fir"
    assert prompt_text("completions", {"prompt": "say hi"}) == "say hi"
    assert prompt_text("completions", {"prompt": ["a", "b", [1, 2]]}) == "a\nb"
    assert prompt_text("embeddings", {"input": "vec me"}) == "vec me"
    assert prompt_text("chat/completions", {"messages": "nonsense"}) == ""
    assert prompt_text("completions", {}) == ""


def test_the_hash_ignores_case_and_white_space():
    assert normalise("  Hello\n\tWORLD ") == "hello world"
    assert prompt_hash("Hello   world") == prompt_hash("hello world")
    assert prompt_hash("hello world") != prompt_hash("hello world!")


@pytest.mark.anyio
async def test_near_and_exact_duplicates_are_flagged_with_their_nearest_request():
    registry = CollectorRegistry()
    store = Store()
    worker = SimilarityWorker(store=store, registry=registry, k=3)
    worker.offer(item(1, BASE))
    worker.offer(item(2, UNRELATED[0]))
    worker.offer(item(3, "how do i reset my  PASSWORD?"))  # the same once normalised
    worker.offer(item(4, CLOSE[0]))
    worker.offer(item(5, UNRELATED[1]))
    assert await worker.flush() == 5
    rows = {r["id"]: r for r in store.rows}
    assert rows["r1"]["nearest_id"] is None
    assert rows["r1"]["matches"] == []
    assert rows["r1"]["score"] == 0.0
    assert not rows["r1"]["exact_duplicate"]
    assert not rows["r1"]["near_duplicate"]
    assert rows["r3"]["exact_duplicate"]
    assert rows["r3"]["near_duplicate"]
    assert rows["r3"]["nearest_id"] == "r1"
    assert rows["r3"]["score"] == pytest.approx(1.0)
    assert rows["r4"]["nearest_id"] in ("r1", "r3")
    assert 0.55 < rows["r4"]["score"] < 0.92
    assert not rows["r4"]["near_duplicate"]
    assert not rows["r4"]["exact_duplicate"]
    assert [m["id"] for m in rows["r4"]["matches"]][:2] in (["r1", "r3"], ["r3", "r1"])
    assert len(rows["r4"]["matches"]) <= 3
    assert all(a["score"] >= b["score"] for a, b in zip(rows["r4"]["matches"], rows["r4"]["matches"][1:], strict=False))
    assert rows["r5"]["score"] < 0.2
    assert not rows["r5"]["near_duplicate"]
    assert rows["r2"]["prompt_hash"] == prompt_hash(UNRELATED[0])
    assert sample(registry, "gateway_similarity_processed_total") == 5
    assert sample(registry, "gateway_similarity_exact_duplicates_total") == 1
    assert sample(registry, "gateway_similarity_near_duplicates_total") == 1

    # A later batch sees the earlier ones.
    worker.offer(item(6, BASE))
    await worker.flush()
    assert store.rows[-1]["exact_duplicate"]
    assert store.rows[-1]["nearest_id"] in ("r1", "r3")


@pytest.mark.anyio
async def test_a_prompt_of_another_project_is_never_a_match():
    store = Store()
    worker = SimilarityWorker(store=store)
    worker.offer(item(1, BASE, project="b"))
    worker.offer(item(2, BASE, project="a"))
    worker.offer(item(3, BASE, project="b"))
    await worker.flush()
    rows = {r["id"]: r for r in store.rows}
    assert rows["r2"]["matches"] == []
    assert not rows["r2"]["exact_duplicate"]
    assert rows["r3"]["nearest_id"] == "r1"
    assert [m["id"] for m in rows["r3"]["matches"]] == ["r1"]


@pytest.mark.anyio
async def test_the_window_is_a_bounded_ring_and_projects_are_forgotten_least_recent_first():
    store = Store()
    worker = SimilarityWorker(store=store, window=3, max_projects=2, batch_size=1)
    texts = [f"question number {n} about topic {n * 7}" for n in range(5)]
    for n, text in enumerate(texts):
        worker.offer(item(n, text))
    await worker.flush()
    win = worker._projects["p1"]
    assert win.size == 3
    assert len(win.vectors) <= 3
    assert sorted(win.ids) == ["r2", "r3", "r4"]
    assert len(win.hash_counts) == 3
    # r0 has left the window: the same text again is no longer an exact duplicate, and r0 is never a match.
    worker.offer(item(5, texts[0]))
    await worker.flush()
    assert not store.rows[-1]["exact_duplicate"]
    assert "r0" not in [m["id"] for m in store.rows[-1]["matches"]]
    worker.offer(item(6, texts[3]))
    await worker.flush()
    assert store.rows[-1]["exact_duplicate"]
    assert store.rows[-1]["nearest_id"] == "r3"

    for project in ("q", "r"):
        worker.offer(item(7, BASE, project=project))
        await worker.flush()
    assert list(worker._projects) == ["q", "r"]  # p1 was the least recently seen


@pytest.mark.anyio
async def test_a_full_queue_drops_and_counts_and_never_blocks():
    registry = CollectorRegistry()
    worker = SimilarityWorker(store=Store(), registry=registry, queue_size=2)
    assert worker.offer(item(1, "a b c"))
    assert worker.offer(item(2, "d e f"))
    assert not worker.offer(item(3, "g h i"))
    assert not worker.offer(item(4, ""))  # no text: nothing to compare, not a drop
    assert worker.dropped == 1
    assert len(worker) == 2
    assert sample(registry, "gateway_similarity_dropped_total", reason="queue_full") == 1


@pytest.mark.anyio
async def test_long_prompts_are_truncated_to_max_chars():
    store = Store()
    worker = SimilarityWorker(store=store, max_chars=10)
    worker.offer(item(1, "abcdefghij and more"))
    worker.offer(item(2, "abcdefghij, different tail"))
    await worker.flush()
    assert store.rows[1]["exact_duplicate"]


@pytest.mark.anyio
async def test_an_embedding_function_replaces_the_local_embedding():
    calls: list[list[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        await asyncio.sleep(0)
        # A toy deployment: "cat" and "dog" axes, not unit length (the worker normalises).
        return np.array([[3.0 * t.count("cat"), 3.0 * t.count("dog"), 0.1] for t in texts])

    store = Store()
    worker = SimilarityWorker(store=store, embed=embed, near_duplicate_threshold=0.9)
    worker.offer(item(1, "cat"))
    worker.offer(item(2, "cat cat"))
    worker.offer(item(3, "dog"))
    await worker.flush()
    assert calls == [["cat", "cat cat", "dog"]]  # one call per batch
    rows = {r["id"]: r for r in store.rows}
    assert rows["r2"]["nearest_id"] == "r1"
    assert rows["r2"]["near_duplicate"]
    assert not rows["r2"]["exact_duplicate"]
    assert rows["r3"]["score"] < 0.1


@pytest.mark.anyio
async def test_a_prompt_seen_lately_is_not_embedded_again_and_the_cache_stays_bounded():
    calls: list[list[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.array([[1.0 + len(t), 1.0] for t in texts])

    worker = SimilarityWorker(store=Store(), embed=embed, cache_size=2)
    for i, text in enumerate(["a", "A  ", "bb", "a"]):  # "A  " is "a" normalised
        worker.offer(item(i, text))
    await worker.flush()
    assert calls == [["a", "bb"]]  # each distinct prompt once, in its first form
    for i, text in enumerate(["ccc", "dddd"]):  # two new ones push "a" and "bb" out of a cache of 2
        worker.offer(item(10 + i, text))
    await worker.flush()
    worker.offer(item(20, "a"))
    await worker.flush()
    assert calls[1:] == [["ccc", "dddd"], ["a"]]
    assert len(worker._vectors) == 2
    assert worker.processed == 7


@pytest.mark.anyio
async def test_a_failing_embedding_function_drops_the_batch_and_a_failing_store_is_not_fatal():
    registry = CollectorRegistry()

    async def embed(texts: list[str]) -> np.ndarray:
        raise ConnectionError("deployment down")

    worker = SimilarityWorker(store=Store(), registry=registry, embed=embed)
    worker.offer(item(1, "x"))
    assert await worker.flush() == 0
    assert sample(registry, "gateway_similarity_dropped_total", reason="embed_error") == 1

    other = CollectorRegistry()
    failing = SimilarityWorker(store=Store(fail=True), registry=other)
    failing.offer(item(1, BASE))
    assert await failing.flush() == 1
    assert sample(other, "gateway_similarity_write_errors_total") == 1


@pytest.mark.anyio
async def test_large_batches_run_in_a_thread_with_the_same_results():
    texts = [BASE, *CLOSE, *UNRELATED] * 4
    inline, threaded = Store(), Store()
    for store, threshold in ((inline, 10_000), (threaded, 1)):
        worker = SimilarityWorker(store=store, thread_min_batch=threshold, batch_size=16)
        for n, text in enumerate(texts):
            worker.offer(item(n, text))
        await worker.flush()
    assert inline.rows == threaded.rows
    assert sum(r["exact_duplicate"] for r in inline.rows) == len(texts) - len(set(texts))


@pytest.mark.anyio
async def test_the_background_loop_processes_offers_and_close_flushes_the_rest():
    store = Store()
    worker = SimilarityWorker(store=store, batch_size=2, flush_interval_s=0.01)
    worker.start()
    worker.offer(item(1, BASE))
    worker.offer(item(2, BASE))
    for _ in range(100):
        if len(store.rows) == 2:
            break
        await asyncio.sleep(0.01)
    assert [r["id"] for r in store.rows] == ["r1", "r2"]
    worker.flush_interval_s = 60.0
    await asyncio.sleep(0.02)
    worker.offer(item(3, BASE))
    await worker.close()
    assert [r["id"] for r in store.rows] == ["r1", "r2", "r3"]


@pytest.mark.anyio
async def test_close_without_start_still_processes_what_is_queued():
    store = Store()
    worker = SimilarityWorker(store=store)
    worker.offer(item(1, BASE))
    await worker.close()
    assert [r["id"] for r in store.rows] == ["r1"]
