"""No value of the wrong type reaches a store, and no row a store refuses holds back the others: records of
arbitrary values are typed by the schema and written by both stores (a property test), untyped records given to a
store straight are written or set aside (never raised as an outage), and a driver that raises any exception on any
row costs that row only."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.sinks.spool import json_line
from gateway.store.base import RecordsRefused, Store
from gateway.store.postgres import PostgresStore
from gateway.store.records import BIGINT, FLAG, INTEGER, LIST, MAP, REAL, REAL_OR_NULL, RECORD_FIELDS, TEXT, typed
from gateway.store.sqlite import SQLiteStore
from tests.services import drop_schema, require_postgres
from tests.unit.store.conftest import record

# Anything a body, a token's claims or an upstream's answer could put in a field, and more.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None), max_size=5),  # lone surrogates, NUL, anything
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=3),
        st.tuples(inner),
    ),
    max_leaves=6,
)
wild_records = st.dictionaries(st.sampled_from(list(RECORD_FIELDS)), values)


def of_its_kind(kind: Any, value: Any) -> bool:
    """The schema's promise, written apart from the generated check it tests."""
    if kind is TEXT:
        return type(value) is str
    if kind in (INTEGER, BIGINT):
        bits = 31 if kind is INTEGER else 63
        return type(value) is int and -(2**bits) <= value < 2**bits
    if kind is REAL:
        return type(value) is float and math.isfinite(value)
    if kind is REAL_OR_NULL:
        return value is None or (type(value) is float and math.isfinite(value))
    if kind is FLAG:
        return type(value) is bool
    if kind is LIST:
        return type(value) is list
    if kind is MAP:
        return type(value) is dict
    raise AssertionError(kind)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(wild_records)
def test_typing_gives_every_field_its_declared_type_whatever_it_was(fields: dict[str, Any]) -> None:
    out = typed(dict(fields))
    for name, kind in RECORD_FIELDS.items():
        assert of_its_kind(kind, out[name]), (name, fields.get(name), out[name])
        if kind is TEXT and name in fields and type(fields[name]) is str:
            assert out[name] == fields[name]  # text is kept as it is
    assert typed(dict(out)) == out  # and typing a typed record changes nothing


def test_a_value_that_is_not_text_is_kept_as_its_json_and_numbers_fit_their_columns() -> None:
    out = typed({"model_requested": {"a": 1}, "status": 2**40, "prompt_tokens": -(2**70), "latency_ms": math.inf})
    assert out["model_requested"] == '{"a":1}'
    assert (out["status"], out["prompt_tokens"], out["latency_ms"]) == (2**31 - 1, -(2**63), 0.0)
    assert (out["ttfb_ms"], out["stream"], out["spans"], out["tags"], out["id"]) == (None, False, [], {}, "")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, list[Store]]]:
    """An SQLite and a PostgreSQL store, open on a loop of the test's own (hypothesis runs examples synchronously)."""
    dsn = require_postgres()
    schema = f"gw_records_{uuid.uuid4().hex[:10]}"
    loop = asyncio.new_event_loop()
    opened: list[Store] = [SQLiteStore(str(tmp_path / "g.db")), PostgresStore(dsn, schema=schema)]
    try:
        for store in opened:
            loop.run_until_complete(store.open())
            loop.run_until_complete(store.write([record(0)]))  # past the first write's check for doubles
        yield loop, opened
    finally:
        for store in opened:
            loop.run_until_complete(store.close())
        loop.close()
        drop_schema(dsn, schema)


def ids_in(loop: asyncio.AbstractEventLoop, store: Store, ids: list[str]) -> list[str]:
    rows = loop.run_until_complete(store.recent(limit=100_000))
    wanted = set(ids)
    return sorted(r["id"] for r in rows if r["id"] in wanted)


def test_typed_records_of_any_values_are_written_by_both_stores(stores) -> None:
    loop, opened = stores

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(wild_records, min_size=1, max_size=8))
    def check(batch: list[dict[str, Any]]) -> None:
        ids = [uuid.uuid4().hex for _ in batch]
        for fields, record_id in zip(batch, ids, strict=True):
            fields["id"] = record_id
        records = [typed(fields) for fields in batch]
        for r in records:
            assert json_line(r).count(b"\n") == 1  # the spool can keep it too
        for store in opened:
            loop.run_until_complete(store.write([dict(r) for r in records]))  # never refused
            assert ids_in(loop, store, ids) == sorted(ids)

    check()


def test_untyped_records_given_to_a_store_are_written_or_set_aside_never_held(stores) -> None:
    """The other end: a record that was not typed (spooled by an older version, say) is written as the store
    takes it, or refused and named; it never fails the batch as an outage would, and never blocks the next."""
    loop, opened = stores

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(wild_records, min_size=1, max_size=8))
    def check(batch: list[dict[str, Any]]) -> None:
        ids = [uuid.uuid4().hex for _ in batch]
        records = [{**record(i), **fields, "id": ids[i]} for i, fields in enumerate(batch)]
        for store in opened:
            refused: set[int] = set()
            try:
                loop.run_until_complete(store.write([dict(r) for r in records]))
            except RecordsRefused as exc:
                refused = {i for i, _ in exc.refused}
            written = ids_in(loop, store, ids)
            assert written == sorted(ids[i] for i in range(len(ids)) if i not in refused)
            follow = uuid.uuid4().hex
            loop.run_until_complete(store.write([{**record(0), "id": follow}]))
            assert ids_in(loop, store, [follow]) == [follow]

    check()


class FaultyConnection:
    """An SQLite connection whose executemany raises, for a batch holding a poisoned row, the exception chosen
    for that row; anything else goes to the real connection."""

    def __init__(self, conn: sqlite3.Connection, poison: dict[str, BaseException]) -> None:
        self.conn = conn
        self.poison = poison

    def execute(self, *args: Any) -> Any:
        # A batch that may be in the table already is inserted row by row (the rows inserted are counted), and a
        # run of rows of one shape in statements of many rows: a poisoned id among the values bound fails it.
        if len(args) > 1 and args[0].startswith("INSERT INTO model_cost_logs"):
            for value in args[1]:
                if isinstance(value, str) and value in self.poison:
                    raise self.poison[value]
        return self.conn.execute(*args)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> Any:
        for row in rows:
            if row[0] in self.poison:
                raise self.poison[row[0]]
        return self.conn.executemany(sql, rows)

    def close(self) -> None:
        self.conn.close()


def exceptions_drivers_raise() -> list[BaseException]:
    import asyncpg

    return [
        sqlite3.InterfaceError("Error binding parameter 3"),
        sqlite3.ProgrammingError("type 'dict' is not supported"),
        sqlite3.IntegrityError("NOT NULL constraint failed"),
        sqlite3.DataError("string or blob too big"),
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        ValueError("bad value"),
        TypeError("unsupported type"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        KeyError("id"),
        RuntimeError("anything at all"),
        ZeroDivisionError("even this"),
        asyncpg.DataError("invalid input value"),
        asyncpg.NotNullViolationError("null value in column"),
        asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds maximum"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(4))
async def test_an_sqlite_driver_raising_anything_on_any_row_costs_that_row_only(tmp_path: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    kinds = exceptions_drivers_raise()
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    records = [{**record(i), "id": f"r{i}"} for i in range(300)]
    poison = {r["id"]: rng.choice(kinds) for r in rng.sample(records, 12)}
    assert store._conn is not None
    store._conn = FaultyConnection(store._conn, poison)  # type: ignore[assignment]
    refused: list[int] = []
    for start in range(0, 300, 100):
        try:
            await store.write(records[start : start + 100])
        except RecordsRefused as exc:
            refused += [start + i for i, _ in exc.refused]
    assert sorted(records[i]["id"] for i in refused) == sorted(poison)
    written = {r["id"] for r in await store.recent(limit=1000)}
    assert written == {r["id"] for r in records} - poison.keys()
    await store.close()


def test_a_lone_surrogate_in_any_text_field_is_made_encodable() -> None:
    """Both stores refuse text that is not UTF-8; hypothesis once found it in `endpoint`: every text field, at once."""
    from gateway.store.records import RECORD_FIELDS, TEXT

    texts = [name for name, kind in RECORD_FIELDS.items() if kind is TEXT]
    record = typed({name: "a\ud800b" for name in texts})
    for name in texts:
        record[name].encode("utf-8")  # raises if a lone surrogate is left
        assert record[name].startswith("a")
        assert record[name].endswith("b")


class _Row(list[Any]):
    """A row that a weak reference can follow (a tuple cannot)."""


def test_a_batchs_rows_are_freed_when_its_write_ends_without_the_garbage_collector() -> None:
    # A reference cycle around the rows kept a batch of a thousand (some 10 MB) alive until the collector's next
    # pass: with the collector off, nothing may be left once the write returns, split batches included.
    import gc
    import weakref

    from gateway.store.base import write_setting_aside_refused

    made: list[weakref.ref[_Row]] = []

    def make_row(rec: dict[str, Any]) -> Any:
        row = _Row([rec["n"]])
        made.append(weakref.ref(row))
        return row

    async def write(rows: list[Any]) -> None:
        if any(row[0] == 3 for row in rows):
            raise ValueError("refused")  # a bad row: the batch is split until it is alone

    async def run() -> None:
        with pytest.raises(RecordsRefused):
            await write_setting_aside_refused([{"n": n} for n in range(8)], make_row, write, lambda e: False, "t")

    gc.disable()
    try:
        asyncio.run(run())
        assert made
        assert [ref for ref in made if ref() is not None] == []
    finally:
        gc.enable()
