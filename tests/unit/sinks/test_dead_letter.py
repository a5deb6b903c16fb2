"""A store whose driver raises anything on any row, behind its outbox: every good record reaches the table once,
every refused one lands in the dead-letter file and is counted, and an outage in between changes neither."""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.sinks.deadletter import FILE_NAME, DeadLetter
from gateway.sinks.outbox import Outbox
from gateway.sinks.spool import Spool, json_line
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.services import require_postgres
from tests.unit.sinks.test_outbox import outcome, until
from tests.unit.store.conftest import record
from tests.unit.store.test_records import FaultyConnection, exceptions_drivers_raise

pytestmark = pytest.mark.anyio


class Faults:
    """The rows to refuse (id -> exception) and how many writes to fail first as an outage would."""

    def __init__(self, poison: dict[str, BaseException], outages: int, outage: BaseException) -> None:
        self.poison = poison
        self.outages = outages
        self.outage = outage

    def check(self, rows: list[tuple[Any, ...]]) -> None:
        if self.outages > 0:
            self.outages -= 1
            raise self.outage
        for row in rows:
            if row[0] in self.poison:
                raise self.poison[row[0]]


@pytest.fixture(params=["sqlite", "postgres"])
async def faulty_store(request, tmp_path: Path, monkeypatch):
    """(store, install(faults)): a real store of each kind, whose driver the test makes fail."""
    if request.param == "sqlite":
        store: Store = SQLiteStore(str(tmp_path / "g.db"))
        await store.open()

        def install(faults: Faults) -> None:
            assert isinstance(store, SQLiteStore)
            assert store._conn is not None
            conn = FaultyConnection(store._conn, {})
            real = conn.executemany

            def executemany(sql: str, rows: list[tuple[Any, ...]]) -> Any:
                if "model_cost_logs" in sql:
                    faults.check(rows)
                return real(sql, rows)

            real_execute = conn.execute

            def execute(*args: Any) -> Any:
                # A batch that may be in the table already is inserted row by row (the rows inserted are counted),
                # and a run of rows of one shape in statements of many rows: each value bound is looked at as an id
                # (a poisoned one anywhere fails the statement, as the driver would).
                if len(args) > 1 and args[0].startswith("INSERT INTO model_cost_logs"):
                    faults.check([(value,) for value in args[1]])
                return real_execute(*args)

            conn.executemany = executemany  # type: ignore[method-assign]
            conn.execute = execute  # type: ignore[method-assign]
            store._conn = conn  # type: ignore[assignment]

        yield store, install, sqlite3.OperationalError("database is locked")
        await store.close()
        return
    dsn = require_postgres()
    schema = f"gw_dead_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(dsn, schema=schema)
    await store.open()

    def install_pg(faults: Faults) -> None:
        real = asyncpg.connection.Connection.copy_records_to_table

        async def copy(self: Any, table: str, *, records: Any, **kwargs: Any) -> Any:
            rows = list(records)
            if "model_cost_logs" in table:
                faults.check(rows)
            return await real(self, table, records=rows, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, "copy_records_to_table", copy)

    yield store, install_pg, ConnectionResetError("connection reset by peer")
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.mark.parametrize("seed", range(3))
async def test_refused_rows_go_to_the_dead_letter_file_and_the_rest_to_the_table_once(faulty_store, tmp_path, seed):
    store, install, outage = faulty_store
    rng = random.Random(seed)
    records = [{**record(i), "id": f"r{seed}-{i}"} for i in range(400)]
    poison = {r["id"]: rng.choice(exceptions_drivers_raise()) for r in rng.sample(records, 20)}
    install(Faults(poison, outages=rng.randint(1, 4), outage=outage))
    registry = CollectorRegistry()
    folder = tmp_path / "spool" / "store"
    outbox = Outbox(
        store, registry=registry, batch_size=64, flush_interval_s=0.01, max_backoff_s=0.05,
        spool=Spool(folder, max_bytes=1 << 24), dead_letter=DeadLetter(folder, "store", max_bytes=1 << 20),
        write_timeout_s=10, spill_after_s=5,
    )  # fmt: skip
    outbox.start()
    for start in range(0, 400, 37):
        outbox.put(records[start : start + 37])
    await until(lambda: outbox.sent + outbox.dead_lettered >= 400 and outbox.stats()["state"] == "ok", 30)
    await outbox.close()
    rows = await store.recent(limit=1000)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records if r["id"] not in poison)  # once each
    lines = [orjson.loads(line) for line in (folder / FILE_NAME).read_bytes().splitlines()]
    assert sorted(line["record"]["id"] for line in lines) == sorted(poison)
    for line in lines:
        assert type(poison[line["record"]["id"]]).__name__ in line["error"]
    assert outbox.stats()["dead_lettered"] == len(poison) == outcome(registry, "dead_lettered", "store")
    assert outbox.stats()["dropped"] == 0


def test_the_dead_letter_file_is_capped_and_keeps_any_record_as_one_line(tmp_path: Path) -> None:
    dead = DeadLetter(tmp_path, "store", max_bytes=600, fsync=False)
    odd = {"id": "a", "n": 2**70, "s": "\ud800", 3: object()}
    assert json_line(odd).count(b"\n") == 1
    written = dead.append([(odd, "TypeError"), ({"id": "b"}, "x"), ({"id": "c" * 400}, "y"), ({"id": "d"}, "z")])
    assert written == 2  # c does not fit: it and what follows are left to the caller to count
    assert dead.size_bytes <= 600
    lines = [orjson.loads(line) for line in (tmp_path / FILE_NAME).read_bytes().splitlines()]
    assert [line["error"] for line in lines] == ["TypeError", "x"]
    assert lines[0]["record"] == {"id": "a", "n": str(2**70), "s": "\\ud800", "3": lines[0]["record"]["3"]}
