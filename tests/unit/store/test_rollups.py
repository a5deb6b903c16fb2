"""gateway/store/rollups.py and rollup_sql.py: the usage rollups written with the records, on both stores, read back
as the records' own sums (the partial hours at a range's ends from the records), and the latency histogram."""

from __future__ import annotations

import random
from importlib import resources
from typing import Any

import numpy as np
import pytest

from gateway.store import analytics_sql, rollup_sql, rollups
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.unit.store.conftest import record

DAY = 86_400
T0 = 1_700_006_400.0  # a UTC midnight


def records(n: int, seed: int, days: float = 3.0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        status = rng.choice([200, 200, 200, 429, 500])
        prompt, completion = rng.randrange(1, 500), rng.randrange(0, 300)
        out.append(
            record(i, project=rng.choice(["A", "B"]), ts=T0 + rng.uniform(0, days * DAY))
            | {"model_requested": rng.choice(["m1", "m2"]), "model_served": "s", "provider": "p", "status": status,
               "key_id": rng.choice(["vk_1", ""]), "key_name": "cfg", "team": rng.choice(["t1", "t2"]),
               "latency_ms": rng.lognormvariate(5, 1), "cost_usd": rng.choice([None, 0.001 * prompt]),
               "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        )  # fmt: skip
    return out


def test_the_migrations_are_the_generated_sql():
    for dialect in ("postgres", "sqlite"):
        folder = resources.files("gateway.store").joinpath("migrations", dialect)
        assert folder.joinpath("0012_usage_rollups.up.sql").read_text() == rollups.migration_sql(dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_a_percentile_from_the_bins_is_within_one_bin_of_the_exact_one(seed):
    rng = np.random.default_rng(seed)
    latencies = rng.lognormal(5 + seed, 1.2, size=int(rng.integers(1, 3000)))
    bins = [0] * len(rollups.BINS)
    for ms in latencies:
        bins[rollups.latency_bin(float(ms))] += 1
    for p in (0.5, 0.95, 0.99):
        exact = float(np.percentile(latencies, p * 100))
        assert rollups.percentile(bins, p, float(latencies.max())) == pytest.approx(exact, rel=rollups.RATIO - 1)


def test_the_plan_reads_the_records_only_at_the_partial_ends():
    assert rollup_sql.plan(T0 + 10, T0 + 3 * DAY + 20, DAY) == [
        (None, T0 + 10, T0 + 3600), (None, T0 + 3 * DAY, T0 + 3 * DAY + 20),
        (DAY, T0 + DAY, T0 + 3 * DAY), (3600, T0 + 3600, T0 + DAY),
    ]  # fmt: skip
    assert rollup_sql.plan(T0, T0 + 7200, 3600) == [(3600, T0, T0 + 7200)]
    assert rollup_sql.plan(T0 + 1, T0 + 3599, 3600) is None  # no whole hour: the records alone
    assert rollup_sql.plan(T0, T0 + 7200, 60) is None  # minutes: the records alone


async def _both(store: Any, kind: str, interval: int, group_by: str, since: float, until: float) -> tuple[Any, Any]:
    """The series as the store answers it (rollups) and as the records alone sum it."""
    rolled = await store.timeseries(kind, interval_s=interval, group_by=group_by, since=since, until=until)
    sql, args = analytics_sql.build_timeseries(kind, interval, group_by, since, until, None, store.dialect)  # type: ignore[arg-type]
    raw = analytics_sql.timeseries_rows(kind, group_by, await store._named(sql, args))  # type: ignore[arg-type]
    return rolled, raw


def _same(rolled: list[dict[str, Any]], raw: list[dict[str, Any]]) -> None:
    assert [(r["bucket"], r["group"]) for r in rolled] == [(r["bucket"], r["group"]) for r in raw]
    for a, b in zip(rolled, raw, strict=True):
        for name, value in b.items():
            if name.startswith("p") and name.endswith("_latency_ms"):
                assert a[name] == pytest.approx(value, rel=rollups.RATIO - 1), name
            else:
                assert a[name] == pytest.approx(value), name


@pytest.mark.anyio
async def test_rollups_answer_as_the_records_do_for_any_range(store):
    batch = records(1500, seed=1)
    for start in range(0, len(batch), 400):
        await store.write(batch[start : start + 400])
    rng = random.Random(2)
    for _ in range(6):
        since = T0 + rng.uniform(-3600, DAY)
        until = since + rng.uniform(3 * 3600, 2.5 * DAY)
        for kind, interval, group_by in [("costs", DAY, "model"), ("usage", 3600, "none"), ("errors", 6 * 3600, "key"),
                                         ("models", DAY, "none"), ("performance", DAY, "team")]:  # fmt: skip
            rolled, raw = await _both(store, kind, interval, group_by, since, until)
            _same(rolled, raw)
        by_key = await store.usage_summary("key", since=since, until=until)
        sql, args = analytics_sql.build_usage("key", since, until, None, store.dialect)
        raw_by_key = analytics_sql.usage_rows(await store._named(sql, args))
        assert [r["group"] for r in by_key] == [r["group"] for r in raw_by_key]
        for a, b in zip(by_key, raw_by_key, strict=True):
            assert a == pytest.approx(b)


@pytest.mark.anyio
async def test_a_batch_written_again_is_counted_once_and_a_refused_record_never(store):
    batch = records(50, seed=3, days=0.5)
    await store.write(batch)
    store._unsure["model_cost_logs"].failed(batch)  # as after a write that timed out: it may have committed
    await store.write(batch[:30] + records(60, seed=4, days=0.5)[50:])  # 30 again, 10 new
    poisoned = records(61, seed=5, days=0.5)[60] | {"id": "poison", "endpoint": None}
    with pytest.raises(Exception, match="refused"):
        await store.write([poisoned])
    (summary,) = await store.usage_summary("project", since=T0 - DAY, until=T0 + DAY, project="A")
    assert summary["requests"] == sum(1 for r in batch + records(60, seed=4, days=0.5)[50:] if r["project"] == "A")
    rows = await store._named("SELECT sum(requests) AS n FROM usage_rollups WHERE period_s = 3600", [])
    assert int(rows[0]["n"]) == 60


@pytest.mark.anyio
async def test_the_migration_counts_the_records_written_before_it(store):
    await store.write(records(400, seed=6))
    expected, _ = await _both(store, "performance", DAY, "project", T0, T0 + 3 * DAY)
    await store.migrate_down(11)
    await store.close()
    if isinstance(store, SQLiteStore):
        again_store: Any = SQLiteStore(store.path)
    else:
        again_store = PostgresStore(store.dsn, schema=store.schema)
    await again_store.open()  # migrates up: the table made again and filled from the records
    try:
        again, raw = await _both(again_store, "performance", DAY, "project", T0, T0 + 3 * DAY)
        assert len(again) == len(expected)
        for a, b in zip(again, expected, strict=True):  # the same bins: the same percentiles (sums in another order)
            assert a == pytest.approx(b)
        _same(again, raw)
    finally:
        await again_store.close()


@pytest.mark.anyio
async def test_retention_removes_the_rollups_with_their_records(store):
    await store.write(records(200, seed=7))
    removed = await store.retention("model_cost_logs", 0.0)
    assert removed == 200
    assert await store._named("SELECT count(*) AS n FROM usage_rollups", []) == [{"n": 0}]
