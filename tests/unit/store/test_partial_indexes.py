"""Migration 0015: the trace and request-id indexes hold only the rows that have a client's trace or X-Request-ID.
Lookups by either still return the rows a plain equality returns (with and without a traceparent, with and without
request ids, across projects, page by page), and each is answered from an index on both stores."""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import asyncpg
import pytest

from gateway.store.migrate import migrations
from gateway.store.trace_sql import TraceQuery, build_select
from tests.unit.store.conftest import record

pytestmark = pytest.mark.anyio


def records() -> list[dict[str, Any]]:
    """Most with their own id as trace and no request id; a client's trace across projects; a trace whose id is one
    record's own id (a later request sent that record's traceparent); a row of before 0007 (trace ''); request ids
    shared across projects."""
    rows = []
    for i in range(24):
        row = record(i, project=("p1", "p2")[i % 2])
        row["trace_id"] = row["id"]
        rows.append(row)
    for i in (3, 4, 9, 16):
        rows[i]["trace_id"] = "client-trace"
    for i in (6, 7, 12):
        rows[i]["trace_id"] = "r5"
    rows[20]["trace_id"] = ""
    for i in (2, 3, 11, 15):
        rows[i]["client_request_id"] = "req-1"
    rows[8]["client_request_id"] = "req-2"
    return rows


TRACES = ["client-trace", "r5", "r1", "r6", "", "absent"]
REQUEST_IDS = ["req-1", "req-2", "", "absent"]
PROJECTS = [None, "p1", "p2"]


def expected(rows: list[dict[str, Any]], column: str, value: str, project: str | None) -> list[str]:
    found = [r for r in rows if r[column] == value and (project is None or r["project"] == project)]
    return [r["id"] for r in sorted(found, key=lambda r: (r["ts"], r["id"]), reverse=True)]


async def plain_equality(store: Any, column: str, value: str, project: str | None) -> list[str]:
    """The query as it was before 0015: the column compared alone."""
    mark = (lambda n: "?") if store.dialect == "sqlite" else (lambda n: f"${n}")
    sql, args = f"SELECT id FROM model_cost_logs WHERE {column} = {mark(1)}", [value]
    if project is not None:
        sql += f" AND project = {mark(2)}"
        args.append(project)
    return [r["id"] for r in await store._named(sql + " ORDER BY ts DESC, id DESC", args)]


async def every_page(store: Any, q: TraceQuery) -> list[str]:
    seen: list[str] = []
    while True:
        rows, cursor = await store.query_traces(q)
        seen += [r["id"] for r in rows]
        if cursor is None:
            return seen
        q = TraceQuery(**{**{f: getattr(q, f) for f in q.__slots__}, "cursor": cursor})


async def test_lookups_by_trace_and_request_id_return_the_rows_an_equality_does(store):
    rows = records()
    await store.write(rows)
    for trace, project in itertools.product(TRACES, PROJECTS):
        want = expected(rows, "trace_id", trace, project)
        assert await plain_equality(store, "trace_id", trace, project) == want
        assert await every_page(store, TraceQuery(trace_id=trace, project=project, limit=2)) == want, (trace, project)
        page, _ = await store.query_traces(TraceQuery(trace_id=trace, project=project, sort="ts", order="asc"))
        assert [r["id"] for r in page] == want[::-1]
    for request_id, project in itertools.product(REQUEST_IDS, PROJECTS):
        want = expected(rows, "client_request_id", request_id, project)
        assert await plain_equality(store, "client_request_id", request_id, project) == want
        q = TraceQuery(client_request_id=request_id, project=project, limit=3)
        assert await every_page(store, q) == want, (request_id, project)
    both = TraceQuery(trace_id="client-trace", client_request_id="req-1")
    assert [r["id"] for r in (await store.query_traces(both))[0]] == ["r3"]
    assert [r["id"] for r in (await store.query_traces(TraceQuery(trace_id="r5", status=200)))[0]] == [
        "r12", "r7", "r6", "r5",
    ]  # fmt: skip


def sqlite_plan(conn: sqlite3.Connection, q: TraceQuery) -> str:
    sql, args = build_select(q, "sqlite")
    return " | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))


def test_sqlite_answers_trace_and_request_id_lookups_from_the_partial_indexes(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "g.db")
    for m in migrations("sqlite"):
        conn.executescript(m.up)
    indexes = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'model_cost_logs'"))
    assert indexes["model_cost_logs_trace"].endswith("WHERE trace_id <> id")
    assert indexes["model_cost_logs_client_request_id"].endswith("WHERE client_request_id <> ''")
    plan = sqlite_plan(conn, TraceQuery(trace_id="t"))
    assert "USING INDEX model_cost_logs_trace (trace_id=?)" in plan, plan
    assert "USING INDEX model_cost_logs_id (id=?)" in plan, plan
    plan = sqlite_plan(conn, TraceQuery(trace_id="t", since=5.0, sort="latency_ms"))
    assert "USING INDEX model_cost_logs_trace (trace_id=?)" in plan, plan
    plan = sqlite_plan(conn, TraceQuery(client_request_id="req"))
    assert "USING INDEX model_cost_logs_client_request_id (client_request_id=?)" in plan, plan
    for q in (TraceQuery(trace_id="t", project="p"), TraceQuery(client_request_id="req", project="p")):
        plan = sqlite_plan(conn, q)  # the project's index, as before 0015 (no statistics to prefer another)
        assert "USING INDEX model_cost_logs_project_ts (project=?)" in plan, plan


async def test_postgres_answers_trace_and_request_id_lookups_from_the_partial_indexes(pg) -> None:
    store = pg.store()
    await store.open()
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": store.schema, "enable_seqscan": "off"})
    try:
        for q, wanted in [
            (TraceQuery(trace_id="t"), ("_trace_id_idx", "_id_idx")),
            (TraceQuery(trace_id="t", since=5.0, sort="latency_ms"), ("_trace_id_idx", "_id_idx")),
            (TraceQuery(client_request_id="req"), ("_client_request_id_idx",)),
        ]:
            sql, args = build_select(q, "postgres")
            plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + sql, *args))
            assert "Seq Scan" not in plan, plan
            for index in wanted:
                assert f"model_cost_logs_default{index}" in plan, plan
    finally:
        await conn.close()
