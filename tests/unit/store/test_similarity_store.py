"""prompt_similarity_logs on SQLite and PostgreSQL: writes, stats, and the migration both ways."""

from __future__ import annotations

import orjson
import pytest

from gateway.similarity.worker import SimilarityItem, SimilarityWorker
from gateway.store.base import StoreUnavailable
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def row(i: int, project: str = "p1", *, exact: bool = False, near: bool = False, ts: float | None = None) -> dict:
    score = 1.0 if exact else 0.95 if near else 0.3
    return {
        "id": f"r{i}",
        "ts": 1000.0 + i if ts is None else ts,
        "project": project,
        "model": "demo",
        "prompt_hash": f"h{i}",
        "nearest_id": None if i == 0 else f"r{i - 1}",
        "score": score,
        "matches": [] if i == 0 else [{"id": f"r{i - 1}", "score": score}],
        "near_duplicate": exact or near,
        "exact_duplicate": exact,
    }


async def read_back(store) -> list[tuple]:
    sql = "SELECT id, project, nearest_id, score, matches, near_duplicate, exact_duplicate FROM prompt_similarity_logs"
    if isinstance(store, PostgresStore):
        rows = await store._run(lambda conn: conn.fetch(sql + " ORDER BY id"))
        return [tuple(r) for r in rows]
    rows = await store._call(lambda: store._require().execute(sql + " ORDER BY id").fetchall())
    return [(*r[:4], orjson.loads(r[4]), bool(r[5]), bool(r[6])) for r in rows]


async def test_rows_are_written_and_read_back(store):
    await store.write_similarity([row(0), row(1, exact=True), row(2, "p2", near=True)])
    await store.write_similarity([])
    back = await read_back(store)
    assert back == [
        ("r0", "p1", None, 0.3, [], False, False),
        ("r1", "p1", "r0", 1.0, [{"id": "r0", "score": 1.0}], True, True),
        ("r2", "p2", "r1", 0.95, [{"id": "r1", "score": 0.95}], True, False),
    ]


async def test_a_bad_batch_is_refused_whole(store):
    bad = row(2)
    bad["prompt_hash"] = None
    with pytest.raises(StoreUnavailable):
        await store.write_similarity([row(1), bad])
    assert await read_back(store) == []


async def test_stats_say_what_an_exact_and_a_semantic_cache_would_have_served(store):
    assert await store.similarity_stats(None, 0.0) == {
        "requests": 0,
        "exact_duplicates": 0,
        "near_duplicates": 0,
        "exact_cache_hit_rate": 0.0,
        "semantic_cache_hit_rate": 0.0,
    }
    rows = [
        row(0),
        row(1, exact=True),
        row(2, near=True),
        row(3, near=True),
        row(4),
        row(5, "p2", exact=True),
        row(6, "p2"),
        row(7, ts=10.0, exact=True),  # too old
    ]
    await store.write_similarity(rows)
    p1 = await store.similarity_stats("p1", 500.0)
    assert p1 == {
        "requests": 5,
        "exact_duplicates": 1,
        "near_duplicates": 3,
        "exact_cache_hit_rate": pytest.approx(0.2),
        "semantic_cache_hit_rate": pytest.approx(0.6),
    }
    everything = await store.similarity_stats(None, 500.0)
    assert (everything["requests"], everything["exact_duplicates"], everything["near_duplicates"]) == (7, 2, 4)
    assert everything["semantic_cache_hit_rate"] == pytest.approx(4 / 7)
    assert (await store.similarity_stats(None, 0.0))["requests"] == 8
    assert (await store.similarity_stats("nobody", 0.0))["requests"] == 0


async def test_the_worker_writes_to_the_store(store):
    worker = SimilarityWorker(store=store)
    for i, text in enumerate(["How do I reset my password?", "how do I reset my password?", "Write a haiku"]):
        worker.offer(SimilarityItem(id=f"r{i}", ts=1000.0 + i, project="p1", model="m", text=text))
    await worker.flush()
    stats = await store.similarity_stats("p1", 0.0)
    assert (stats["requests"], stats["exact_duplicates"], stats["near_duplicates"]) == (3, 1, 1)


async def test_the_migration_goes_down_and_up_again(store):
    await store.write_similarity([row(0)])
    await store.migrate_down(5)
    with pytest.raises(StoreUnavailable):
        await store.similarity_stats(None, 0.0)
    again = (
        PostgresStore(store.dsn, schema=store.schema) if isinstance(store, PostgresStore) else SQLiteStore(store.path)
    )
    await again.open()  # applies 0006 again
    try:
        assert (await again.similarity_stats(None, 0.0))["requests"] == 0
    finally:
        await again.close()
