"""gateway/store/trace_sql.py: parsing, placeholders, cursors; and the queries run on both stores."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from gateway.store.analytics_sql import build_timeseries, parse_interval
from gateway.store.trace_sql import TraceQuery, build_select, encode_cursor, parse_trace_query
from tests.unit.store.conftest import record


def test_parse_reads_every_kind_of_value():
    q = parse_trace_query(
        [("since", "10.5"), ("status", "429"), ("tag", "env:prod"), ("tag", "tier:gold"), ("metadata", "a.b:c:d"),
         ("sort", "latency_ms"), ("order", "asc"), ("limit", "7"), ("model", ""), ("similar_to", "x")],
        allow=("similar_to",),
    )  # fmt: skip
    assert (q.since, q.status, q.sort, q.order, q.limit, q.model) == (10.5, 429, "latency_ms", "asc", 7, None)
    assert q.tags == {"env": "prod", "tier": "gold"}
    assert q.metadata == {"a.b": "c:d"}


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": "-1"}, "limit"), ({"status": "2.5"}, "status"), ({"max_cost_usd": "inf"}, "max_cost_usd"),
     ({"tag": ":v"}, "tag"), ({"metadata": "k v"}, "metadata"), ({"sort": "id"}, "sort"), ({"nope": "1"}, "nope"),
     ({"cursor": "e30"}, "cursor"), ({"status": "70000"}, "status"), ({"min_total_tokens": "1" + "0" * 30},
     "min_total_tokens"), ({"text": "a\x00b"}, "text")],
)  # fmt: skip
def test_parse_names_the_bad_parameter(params, param):
    with pytest.raises(InvalidRequest) as caught:
        parse_trace_query(params)
    assert caught.value.param == param


def test_placeholders_and_json_access_per_dialect():
    q = TraceQuery(project="p", tags={"env": "prod"}, ids=("a", "b"), text="Hi")
    sqlite, sqlite_args = build_select(q, "sqlite")
    assert "json_extract(tags, ?) = ?" in sqlite
    assert "id IN (?, ?)" in sqlite
    assert "$1" not in sqlite
    assert sqlite_args == ["p", '$."env"', "prod", "hi", "hi", "a", "b", 51]
    postgres, postgres_args = build_select(q, "postgres")
    assert "tags ->> $2 = $3" in postgres
    assert "id = ANY($6::text[])" in postgres
    assert "LIMIT $7" in postgres
    assert postgres_args == ["p", "env", "prod", "hi", "hi", ["a", "b"], 51]


def test_a_cursor_holds_the_sort_value_and_id_and_nothing_else_decodes():
    q = TraceQuery(sort="cost_usd")
    cursor = encode_cursor(q, {"id": "r9", "cost_usd": None})
    sql, args = build_select(TraceQuery(sort="cost_usd", cursor=cursor), "sqlite")
    assert "coalesce(cost_usd, 0.0) < ? OR (coalesce(cost_usd, 0.0) = ? AND id < ?)" in sql
    assert args[:3] == [0.0, 0.0, "r9"]
    with pytest.raises(InvalidRequest):
        build_select(TraceQuery(sort="ts", cursor=cursor), "sqlite")


def test_intervals():
    assert [parse_interval(v) for v in ("1m", "5m", "1h", "1d", "90")] == [60, 300, 3600, 86_400, 90]
    for bad in ("0", "1w", "-5", "h"):
        with pytest.raises(InvalidRequest):
            parse_interval(bad)


def test_timeseries_sql_has_no_dialect_leak():
    sql, _ = build_timeseries("performance", 60, "model", 0.0, None, "p", "sqlite")
    assert "floor" not in sql
    assert "?" in sql
    sql, _ = build_timeseries("performance", 60, "model", 0.0, None, "p", "postgres")
    assert "floor" in sql
    assert "$1" in sql


@pytest.mark.anyio
async def test_both_stores_page_and_sum_alike(store):
    rows = [record(i) | {"latency_ms": float(i % 4), "cost_usd": None if i % 2 else 0.25} for i in range(9)]
    await store.write(rows)
    q = TraceQuery(sort="latency_ms", order="asc", limit=4)
    seen: list[str] = []
    while True:
        page, cursor = await store.query_traces(q)
        seen += [r["id"] for r in page]
        if cursor is None:
            break
        q = TraceQuery(sort="latency_ms", order="asc", limit=4, cursor=cursor)
    assert seen == [r["id"] for r in sorted(rows, key=lambda r: (r["latency_ms"], r["id"]))]
    assert (await store.get_trace("r3"))["spans"] == [{"name": "auth", "ms": 0.01}]
    assert await store.get_trace("r3", project="other") is None
    [summary] = await store.usage_summary("project")
    assert summary == {"group": "p1", "requests": 9, "prompt_tokens": 90, "completion_tokens": 45,
                       "total_tokens": 135, "cost_usd": 1.25, "errors": 0}  # fmt: skip
    series = await store.timeseries("performance", interval_s=1000)
    assert series == [{"bucket": 1000, "group": None, "requests": 9, "avg_latency_ms": pytest.approx(12 / 9),
                       "max_latency_ms": 3.0, "p50_latency_ms": 1.0, "p95_latency_ms": pytest.approx(3.0)}]  # fmt: skip


def test_a_text_search_without_a_start_reads_the_last_day_only():
    import time

    q = parse_trace_query([("text", "needle")])
    assert q.since is not None
    assert time.time() - 86_400 - 5 < q.since < time.time() - 86_400 + 5
    assert parse_trace_query([("text", "needle"), ("since", "0")]).since == 0
