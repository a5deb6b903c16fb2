"""A store that hangs is a store that fails, after a bounded wait: PostgreSQL frozen behind a proxy, SQLite locked by
another connection. The write past write_timeout_s fails, the outbox says `stalled`, what waits goes to the spool
within spill_after_s, and once the store is back every record is in the table once (a write that committed after
its timeout is not doubled)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from gateway.sinks.outbox import Outbox
from gateway.sinks.spool import Spool
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.faults import FaultyProxy
from tests.services import require_postgres
from tests.unit.sinks.test_outbox import until
from tests.unit.store.conftest import record

pytestmark = pytest.mark.anyio


def outbox_for(store: Store, tmp_path: Path) -> Outbox:
    return Outbox(
        store, registry=CollectorRegistry(), batch_size=50, flush_interval_s=0.02, max_backoff_s=0.2,
        spool=Spool(tmp_path / "spool", max_bytes=1 << 24), write_timeout_s=0.5, spill_after_s=0.3,
    )  # fmt: skip


async def check_stall_and_recovery(store: Store, outbox: Outbox, hang, recover) -> None:
    outbox.start()
    records = [{**record(i), "id": f"r{i}"} for i in range(400)]
    outbox.put(records[:100])
    await until(lambda: outbox.sent == 100, 20)
    hang()
    for start in range(100, 400, 30):
        outbox.put(records[start : start + 30])
    # Stalled, and everything that waits is on disk: nothing in memory but the put of the moment.
    await until(lambda: outbox.stats()["state"] == "stalled", 20)
    await until(lambda: outbox.stats()["queued"] == 0 and outbox.stats()["spooled"] + outbox.sent >= 400, 20)
    recover()
    await until(lambda: outbox.stats()["state"] == "ok" and outbox.stats()["spooled"] == 0, 30)
    await outbox.close()
    ids = [r["id"] for r in await store.recent(limit=1000)]
    assert sorted(ids) == sorted(r["id"] for r in records)  # each once


async def test_a_frozen_postgresql_stalls_its_outbox_spools_and_loses_nothing(tmp_path: Path) -> None:
    dsn = require_postgres()
    schema = f"gw_stall_{uuid.uuid4().hex[:10]}"
    with FaultyProxy.before(dsn) as proxy:
        store = PostgresStore(proxy.url(dsn), schema=schema, connect_timeout_s=2)
        await store.open()
        try:
            await check_stall_and_recovery(store, outbox_for(store, tmp_path), proxy.freeze, proxy.thaw)
        finally:
            await store.close()
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


async def test_a_locked_sqlite_database_stalls_its_outbox_spools_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    store = SQLiteStore(str(path))
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def lock() -> None:
        other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock, as long as it likes

    try:
        await check_stall_and_recovery(store, outbox_for(store, tmp_path), lock, lambda: other.execute("COMMIT"))
    finally:
        other.close()
        await store.close()


class SlowSink:
    """A sink that takes a batch of up to `fits` records at once and hangs on anything bigger, as a store slow
    enough to need more than write_timeout_s for a full batch would."""

    name = "slow"

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.got: list[int] = []

    async def write(self, records) -> None:
        if len(records) > self.fits:
            await asyncio.Event().wait()
        self.got.extend(int(r["i"]) for r in records)


async def test_a_store_too_slow_for_a_whole_batch_gets_smaller_ones_and_every_record(tmp_path: Path) -> None:
    sink = SlowSink(fits=7)
    outbox = Outbox(
        sink, registry=CollectorRegistry(), batch_size=50, flush_interval_s=0.01, max_backoff_s=0.05,
        spool=Spool(tmp_path, max_bytes=1 << 20), write_timeout_s=0.05, spill_after_s=0.5,
    )  # fmt: skip
    outbox.start()
    outbox.put([{"i": i} for i in range(200)])
    await until(lambda: len(sink.got) == 200, 30)
    assert sorted(sink.got) == list(range(200))
    await outbox.close()
