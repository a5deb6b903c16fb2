"""Write rate of the stores: N records in batches of B through Store.write, as the telemetry writer calls it.

    .venv/bin/python bench/store_write.py [--records 50000] [--batch 500] [--dsn postgresql://postgres@127.0.0.1/test]
                                          [--without-rollups]

--without-rollups: the writes as they were before the usage rollups (gateway/store/rollups.py), which are then
summed and upserted with no row: what the rollups cost the writer is the difference.

Each store's line ends with the bytes its indexes on model_cost_logs hold per record, a count that does not depend
on the machine's speed (the rates do). A record is a request without traceparent or X-Request-ID (its trace id is
its own id, its client_request_id ''), as most are.

PostgreSQL runs in a schema of its own, dropped at the end; SQLite in a temporary file (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from gateway.ids import new_id
from gateway.store import rollups
from gateway.store.base import RECORD_COLUMNS, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore


def record(i: int, now: float) -> dict[str, Any]:
    """A record shaped like the recorder's: three spans, a couple of tags."""
    out: dict[str, Any] = {c: "" for c in RECORD_COLUMNS}
    record_id = new_id()  # time-ordered, as the gateway's ids: appended to the id index
    out.update(
        id=record_id, trace_id=record_id, ts=now + i / 1000, endpoint="chat/completions",
        key_name="bench", key_id="k1",
        project=f"p{i % 10}", team="t1", model_requested="gpt-4o-mini", model_served="gpt-4o-mini-2024-07-18",
        provider="openai", deployment="openai/gpt-4o-mini", status=200, stream=i % 2 == 0, latency_ms=812.5,
        upstream_ms=801.25, ttfb_ms=120.0, ttft_ms=130.5, overhead_ms=1.25, prompt_tokens=120, completion_tokens=80,
        cached_tokens=0, reasoning_tokens=0, total_tokens=200, cost_usd=0.00012, usage_source="upstream",
        spans=[{"name": n, "start_ms": 0.1, "ms": 0.05} for n in ("auth", "ratelimit", "route")],
        tags={"env": "bench", "app": "store_write"}, attempts=1, route_reason="weighted", metadata={"run": "bench"},
        saved_usd=None,
    )  # fmt: skip
    return out


# The bytes of model_cost_logs' indexes: SQLite's pages by dbstat, PostgreSQL's relations (partitions included).
_SQLITE_INDEX_BYTES = (
    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN"
    " (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'model_cost_logs')"
)
_PG_INDEX_BYTES = (
    "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
    " WHERE t.relnamespace = to_regnamespace($1) AND t.relname LIKE 'model_cost_logs%'"
)


async def run(store: Store, records: list[dict[str, Any]], batch: int) -> str:
    """records/s, this process's CPU per record (the gateway's share: encoding, and SQLite's own work), and the
    bytes of the table's indexes per record."""
    await store.open()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(records), batch):
            await store.write(records[start : start + batch])
        rate = len(records) / (time.perf_counter() - started)
        per_record = (time.process_time() - cpu) / len(records) * 1e6
        index_bytes = await _index_bytes(store)
        return (
            f"{len(records)} records, batches of {batch}: {rate:,.0f} records/s, {per_record:.1f} us CPU/record here,"
            f" indexes {index_bytes / len(records):.1f} bytes/record"
        )
    finally:
        await store.close()


async def _index_bytes(store: Store) -> int:
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        try:
            return int(conn.execute(_SQLITE_INDEX_BYTES).fetchone()[0])
        finally:
            conn.close()
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(store.dsn)
    try:
        return int(await conn.fetchval(_PG_INDEX_BYTES, store.schema))
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--without-rollups", action="store_true")
    args = parser.parse_args()
    if args.without_rollups:
        rollups.summed = lambda rows: []

        async def nothing(rows: Any) -> list[Any]:
            return []

        rollups.summed_async = nothing
    now = time.time()
    records = [record(i, now) for i in range(args.records)]
    schema = f"gw_bench_{uuid.uuid4().hex[:8]}"
    try:
        print("postgres ", await run(PostgresStore(args.dsn, schema=schema), records, args.batch))
    finally:
        conn = await asyncpg.connect(args.dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    with tempfile.TemporaryDirectory() as folder:
        print("sqlite   ", await run(SQLiteStore(str(Path(folder) / "bench.db")), records, args.batch))


if __name__ == "__main__":
    asyncio.run(main())
