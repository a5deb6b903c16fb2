"""Prompt similarity: quality of the local embedding on a hand-made set, per-project windows, duplicates, the queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.similarity.embedding import LocalEmbedding, cosine
from gateway.similarity.worker import (
    RECENT_IDS,
    SimilarityItem,
    SimilarityWorker,
    normalise,
    prompt_hash,
    prompt_text,
)

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
    # r1 and r3 are one prompt: one match, as its latest request.
    assert rows["r4"]["matches"][0]["id"] == "r3"
    assert "r1" not in [m["id"] for m in rows["r4"]["matches"]]
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
    assert store.rows[-1]["nearest_id"] == "r3"
    assert store.rows[-1]["score"] == 1.0


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
async def test_the_window_is_bounded_and_projects_are_forgotten_least_recent_first():
    store = Store()
    worker = SimilarityWorker(store=store, window=3, max_projects=2, batch_size=1)
    texts = [f"question number {n} about topic {n * 7}" for n in range(5)]
    for n, text in enumerate(texts):
        worker.offer(item(n, text))
    await worker.flush()
    win = worker._projects["p1"]
    assert win.size == 3
    assert len(win.vectors) <= 3
    assert sorted(ids[-1] for ids in win.recent) == ["r2", "r3", "r4"]
    assert set(win.slots) == {prompt_hash(t) for t in texts[2:]}
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


def window_prompts(worker: SimilarityWorker, project: str = "p1") -> dict[str, list[str]]:
    """The window's prompts, least recently seen first: digest -> its recent request ids, oldest first."""
    win = worker._projects[project]
    return {digest: list(win.recent[slot]) for digest, slot in win.slots.items()}


def ids_of(row: dict) -> list[str]:
    return [m["id"] for m in row["matches"]]


@pytest.mark.anyio
@pytest.mark.parametrize("batch_size", [1, 256], ids=["one_batch_each", "one_batch"])
async def test_a_repeated_prompt_takes_one_row_and_the_least_recently_seen_prompt_leaves_first(batch_size):
    a, b, c, d = (f"question number {n} about topic {n * 7}" for n in range(4))
    worker = SimilarityWorker(store=Store(), window=3, batch_size=batch_size)
    # A three times takes one row. Then C, A again, and D: the window is full and B (seen last before A's repeat)
    # goes, not A (inserted first), whether the prompts come in one batch or one by one.
    for n, text in enumerate([a, a, a, b, c, a, d]):
        worker.offer(item(n, text))
    await worker.flush()
    assert window_prompts(worker) == {
        prompt_hash(c): ["r4"],
        prompt_hash(a): ["r0", "r1", "r2", "r5"],
        prompt_hash(d): ["r6"],
    }
    assert list(window_prompts(worker)) == [prompt_hash(c), prompt_hash(a), prompt_hash(d)]  # LRU order
    assert worker._projects["p1"].size == 3


@pytest.mark.anyio
async def test_a_window_prompt_pushed_out_by_its_own_batch_comes_back_with_its_vector():
    a, b, c, d = (f"question number {n} about topic {n * 7}" for n in range(4))
    store = Store()
    worker = SimilarityWorker(store=store, window=2)
    for n, text in enumerate([a, b]):
        worker.offer(item(n, text))
    await worker.flush()
    for n, text in enumerate([c, d, a], start=2):  # two new prompts fill a window of 2; A was seen last
        worker.offer(item(n, text))
    await worker.flush()
    assert store.rows[-1]["exact_duplicate"]
    assert store.rows[-1]["nearest_id"] == "r0"
    assert list(window_prompts(worker)) == [prompt_hash(d), prompt_hash(a)]
    win = worker._projects["p1"]
    expected = worker.embedding.embed([d, a])
    assert np.allclose(win.vectors[[win.slots[prompt_hash(d)], win.slots[prompt_hash(a)]]], expected, atol=1e-6)


@pytest.mark.anyio
async def test_a_prompt_repeated_within_a_batch_is_matched_with_its_previous_request():
    store = Store()
    worker = SimilarityWorker(store=store, k=3)
    for n, text in enumerate([BASE, UNRELATED[0], BASE.upper(), BASE, CLOSE[0]]):
        worker.offer(item(n, text))
    await worker.flush()
    rows = {r["id"]: r for r in store.rows}
    assert not rows["r0"]["exact_duplicate"]  # not in the window before the batch
    assert rows["r0"]["matches"] == []
    for repeat, previous in (("r2", "r0"), ("r3", "r2")):
        assert rows[repeat]["nearest_id"] == previous
        assert rows[repeat]["score"] == 1.0
        assert rows[repeat]["exact_duplicate"]
        assert rows[repeat]["near_duplicate"]
        assert len(set(ids_of(rows[repeat]))) == len(ids_of(rows[repeat]))
    assert "r0" not in ids_of(rows["r3"])  # superseded by r2
    # A later prompt sees the repeated one once, as its latest request.
    assert ids_of(rows["r4"])[0] == "r3"
    assert not {"r0", "r2"} & set(ids_of(rows["r4"]))
    assert len(worker._projects["p1"].slots) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("k", [1, 3])
async def test_a_repeat_of_a_window_prompt_is_matched_with_its_latest_request_once(k):
    store = Store()
    worker = SimilarityWorker(store=store, k=k)
    for n, text in enumerate([BASE, UNRELATED[0], BASE, CLOSE[0]]):
        worker.offer(item(n, text))
    await worker.flush()
    for n, text in enumerate([CLOSE[1], BASE, BASE, CLOSE[2]], start=4):
        worker.offer(item(n, text))
    await worker.flush()
    rows = {r["id"]: r for r in store.rows}
    # A new prompt after the repeats sees BASE once, as its latest request.
    assert rows["r7"]["nearest_id"] == "r6"
    assert ids_of(rows["r7"]).count("r6") == 1
    assert not {"r0", "r2", "r5", ""} & set(ids_of(rows["r7"]))
    assert rows["r4"]["nearest_id"] == "r2"  # the typo: near BASE, seen as its latest request
    assert "r0" not in ids_of(rows["r4"])
    assert rows["r5"]["nearest_id"] == "r2"
    assert rows["r5"]["score"] == 1.0
    assert rows["r5"]["exact_duplicate"]
    assert rows["r6"]["nearest_id"] == "r5"  # the repeat within the batch supersedes the window's r2
    assert rows["r6"]["score"] == 1.0
    for row in (rows["r4"], rows["r5"], rows["r6"], rows["r7"]):
        assert len(set(ids_of(row))) == len(ids_of(row)) <= k
        assert not {"r0"} & set(ids_of(row))
    assert "r2" not in ids_of(rows["r6"])
    if k == 3:
        # The exact repeat, then the typo (earlier in this batch), then CLOSE[0]; the second repeat the same, with
        # the first one in place of the window's row.
        assert ids_of(rows["r5"]) == ["r2", "r4", "r3"]
        assert ids_of(rows["r6"]) == ["r5", "r4", "r3"]
        assert [m["score"] for m in rows["r6"]["matches"]] == [m["score"] for m in rows["r5"]["matches"]]


@pytest.mark.anyio
async def test_an_exact_repeat_is_matched_with_its_own_prompt_before_an_equal_scoring_other():
    async def embed(texts: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] for _ in texts])  # every prompt the same vector: all score 1.0

    store = Store()
    worker = SimilarityWorker(store=store, embed=embed)
    worker.offer(item(1, "x"))
    worker.offer(item(2, "y"))
    await worker.flush()
    worker.offer(item(3, "y"))
    await worker.flush()
    rows = {r["id"]: r for r in store.rows}
    assert rows["r2"]["nearest_id"] == "r1"
    assert not rows["r2"]["exact_duplicate"]
    assert rows["r3"]["nearest_id"] == "r2"
    assert rows["r3"]["exact_duplicate"]
    assert ids_of(rows["r3"]) == ["r2", "r1"]


@pytest.mark.anyio
async def test_nearest_lists_every_recent_request_of_a_repeated_prompt_then_the_others():
    worker = SimilarityWorker(store=Store(), batch_size=4)
    for n, text in enumerate([BASE, CLOSE[0], BASE, UNRELATED[0], BASE]):
        worker.offer(item(n, text))
    await worker.flush()
    found = await worker.nearest("p1", BASE, k=5, min_score=0.5)
    assert [rid for rid, _ in found] == ["r4", "r2", "r0", "r1"]  # newest first within a prompt
    assert [score for _, score in found][:3] == [1.0, 1.0, 1.0]
    assert 0.5 <= found[3][1] < 1.0
    assert await worker.nearest("p1", BASE, k=2, min_score=0.5) == found[:2]
    assert [rid for rid, _ in await worker.nearest("p1", CLOSE[0], k=1, min_score=0.5)] == ["r1"]

    for n in range(RECENT_IDS + 5):
        worker.offer(item(100 + n, BASE))
    await worker.flush()
    found = await worker.nearest("p1", BASE, k=1000, min_score=0.99)
    assert [rid for rid, _ in found] == [f"r{100 + n}" for n in reversed(range(5, RECENT_IDS + 5))]


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
    end = asyncio.get_running_loop().time() + 30  # the loop's pace depends on the machine: wait for the rows
    while len(store.rows) < 2:
        assert asyncio.get_running_loop().time() < end, "timed out"
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
