from __future__ import annotations

import sqlite3

import pytest

from gateway.store.base import RECORD_COLUMNS
from gateway.store.sqlite import SQLiteStore, migrations


def record(i: int, project: str = "p1") -> dict:
    base = {c: 0 for c in RECORD_COLUMNS}
    base.update(
        id=f"r{i}", ts=1000.0 + i, endpoint="chat/completions", project=project, status=200,
        model_requested="demo", spans=[{"name": "auth", "ms": 0.01}], tags={"k": "v"}, cost_usd=None,
        stream=False, error_type="", usage_source="upstream", cache="", cache_source_id="", saved_usd=None,
    )  # fmt: skip
    for column in ("key_name", "key_id", "team", "user_id", "model_served", "provider", "deployment", "error_domain"):
        base[column] = ""
    return base


@pytest.mark.anyio
async def test_migrations_write_and_read_back(tmp_path):
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    await store.write([record(1), record(2, "p2"), record(3)])
    newest = await store.recent(limit=10, project="p1")
    assert [r["id"] for r in newest] == ["r3", "r1"]
    assert newest[0]["spans"] == [{"name": "auth", "ms": 0.01}]
    assert newest[0]["tags"] == {"k": "v"}
    await store.ping()
    await store.close()


@pytest.mark.anyio
async def test_reopening_applies_nothing_twice_and_down_migrations_drop_the_schema(tmp_path):
    path = str(tmp_path / "g.db")
    for _ in range(2):
        store = SQLiteStore(path)
        await store.open()
        await store.close()
    conn = sqlite3.connect(path)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [m[0] for m in migrations()]
    store = SQLiteStore(path)
    await store.open()
    await store.migrate_down(0)
    await store.close()
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "model_cost_logs" not in tables


@pytest.mark.anyio
async def test_columns_left_at_their_default_are_stored_as_if_bound(tmp_path):
    """The writer leaves out of its INSERT the columns whose value is the table's default ('', '[]', '{}', NULL):
    each row reads back value for value, type for type, as the same record bound whole, whatever its shape, and
    rows of mixed shapes keep the batch's order."""
    from gateway.store.records import typed

    def full(i: int, **values: object) -> dict:
        made = typed(record(i))
        made.update(values)
        return made

    records = [
        full(1),
        full(2, spans=[], tags={}, guardrails=[], metadata={}, cost_usd=0.0, ttfb_ms=None),
        full(3, team="t", cache="hit", cache_source_id="r1", saved_usd=0.25, ttft_ms=1.5, content_input="hi"),
        full(4),
        full(5, provider="", usage_source="", key_name="", project="", model_requested="", trace_id=""),
    ]
    path = str(tmp_path / "g.db")
    store = SQLiteStore(path)
    await store.open()
    await store.write(records[:1])  # the first batch after opening is checked row by row, all columns bound
    await store.write(records[1:])
    await store.close()
    written, bound = _written_and_bound(path, records)
    assert written == bound
    assert [row[0] for row in written] == ["r1", "r2", "r3", "r4", "r5"]


def _written_and_bound(path: str, records: list[dict]) -> tuple[list[tuple], list[tuple]]:
    """(each column and its typeof as the store wrote the rows, the same for the records bound whole one by one)."""
    from gateway.store.sqlite import _INSERT, _row

    conn = sqlite3.connect(path)
    typeof = ", ".join(f"{c}, typeof({c})" for c in RECORD_COLUMNS)
    written = conn.execute(f"SELECT {typeof} FROM model_cost_logs ORDER BY rowid").fetchall()
    conn.execute("DELETE FROM model_cost_logs")
    conn.executemany(_INSERT, [_row(r) for r in records])
    bound = conn.execute(f"SELECT {typeof} FROM model_cost_logs ORDER BY rowid").fetchall()
    conn.close()
    return written, bound


@pytest.mark.anyio
async def test_a_run_of_one_shape_goes_in_statements_of_many_rows_stored_as_if_bound(tmp_path):
    """A run of rows of one shape is written in statements of 64, 16, 4 and 1 rows, not one statement a row: 85
    rows of one shape, 3 of another, 21 of the first are 2 + 1 + 2 statements. Each row reads back value for
    value, type for type, in the batch's order, as the same records bound whole one by one."""
    from gateway.store.records import typed

    def full(i: int, **values: object) -> dict:
        made = typed(record(i))
        made.update(values)
        return made

    records = [full(i) for i in range(85)]
    records += [full(i, team="t", cache="hit", saved_usd=0.25, ttft_ms=1.5) for i in range(85, 88)]
    records += [full(i) for i in range(88, 109)]
    path = str(tmp_path / "g.db")
    store = SQLiteStore(path)
    await store.open()
    # The first batch after opening is checked row by row against what the table holds (a previous process may
    # have written it): the batch under test comes after it.
    await store.write([full(200)])
    records.insert(0, full(200))
    inserts: list[str] = []
    store._require().set_trace_callback(
        lambda sql: inserts.append(sql) if sql.startswith("INSERT INTO model_cost_logs") else None
    )
    await store.write(records[1:])
    await store.close()
    assert [sql.count("), (") + 1 for sql in inserts] == [64, 16, 4, 1, 1, 1, 1, 16, 4, 1]
    written, bound = _written_and_bound(path, records)
    assert written == bound
    assert [row[0] for row in written] == ["r200"] + [f"r{i}" for i in range(109)]


def test_only_the_first_shapes_met_get_statements_of_many_rows():
    """Three statements of many rows a shape, for 16 shapes at most: with the responses' 14 they stay within
    sqlite3's cache of 128 statements a connection; a shape met later runs by executemany."""
    from gateway.store.migrate import sqlite_migrate
    from gateway.store.sqlite import _MULTI_SHAPES, _RowShapes

    conn = sqlite3.connect(":memory:")
    sqlite_migrate(conn, "up")
    shapes = _RowShapes(conn)
    made = [shapes._statement(tuple(bool(i >> b & 1) for b in range(len(shapes._omissible)))) for i in range(20)]
    assert [s.sizes for s in made] == [(64, 16, 4, 1)] * _MULTI_SHAPES + [(1,)] * (20 - _MULTI_SHAPES)
    assert 3 * _MULTI_SHAPES + 14 < 128
