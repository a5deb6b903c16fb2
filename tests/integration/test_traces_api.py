"""The traces, analytics and usage-report APIs on a running gateway, over SQLite and PostgreSQL alike: records are
written straight into the store, then read back through HTTP and checked against the same figures computed here."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.store import rollups
from gateway.store.base import RECORD_COLUMNS, Record, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from gateway.store.trace_sql import parse_trace_query
from gateway.telemetry.tail import matches
from tests.conftest import running
from tests.services import drop_schema, require_postgres

T0 = 1_699_999_200.0  # on the hour
KEYS = {
    "admin": ("sk-admin-x", "A"),
    "viewer": ("sk-viewer-a", "A"),
    "viewer_b": ("sk-viewer-b", "B"),
    "developer": ("sk-dev-a", "A"),
    "billing": ("sk-billing-a", "A"),
}
STATUSES = [200, 200, 200, 429, 500, 200, 200, 400, 200, 503, 200, 200]
ERROR_TYPES = {429: "rate_limit_exceeded", 400: "invalid_request"}
LATENCIES = [120.0, 80.0, 80.0, 300.0, 45.5, 80.0, 999.0, 12.0, 250.0, 80.0, 61.0, 700.0]


def rec(ident: str, **values: Any) -> Record:
    base: Record = {c: "" for c in RECORD_COLUMNS}
    base.update(
        id=ident, ts=T0, endpoint="chat/completions", project="A", status=200, stream=False, latency_ms=10.0,
        upstream_ms=9.0, ttfb_ms=None, ttft_ms=None, overhead_ms=0.5, prompt_tokens=10, completion_tokens=5,
        cached_tokens=0, reasoning_tokens=0, total_tokens=15, cost_usd=None, usage_source="upstream", attempts=1,
        route_reason="weighted", spans=[{"name": "auth", "ms": 0.1}, {"name": "upstream", "ms": 9.0}], tags={},
        guardrails=[], metadata={}, saved_usd=None,
    )  # fmt: skip
    base.update(values)
    return base


def dataset() -> list[Record]:
    rows = []
    for i in range(12):
        status = STATUSES[i]
        prompt, completion = 10 * (i + 1), 3 * i
        rows.append(
            rec(
                f"a{i:02d}", ts=T0 + i * 600, model_requested="gpt" if i % 2 == 0 else "claude",
                model_served="gpt-4o" if i % 2 == 0 else "claude-3", provider="openai" if i % 2 == 0 else "anthropic",
                deployment=f"dep{i % 3}", status=status,
                error_type=ERROR_TYPES.get(status, "upstream_unavailable" if status >= 500 else ""),
                error_domain="client" if 400 <= status < 500 else "upstream" if status >= 500 else "",
                key_id="vk_1" if i < 6 else "", key_name="k1" if i < 6 else "cfgkey", team="t1" if i % 2 else "t2",
                user_id=f"u{i % 4}", trace_id=f"{i:032x}", latency_ms=LATENCIES[i],
                cost_usd=None if i % 4 == 0 else round(0.01 * i, 4), prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion, tags={"env": "prod" if i % 3 == 0 else "dev", "tier": f"g{i % 2}"},
                metadata={"customer": "acme" if i < 4 else "globex", "run.id": str(i % 2)},
                content_input=f"Question number {i}" + (" about the NeEdLe" if i in (2, 7) else ""),
                content_output=f"Answer {i}" + (" with a needle" if i == 9 else ""),
                client_request_id="req-shared" if i in (1, 4) else f"req-a{i}" if i % 3 else "",
            )
        )  # fmt: skip
    for i in range(4):
        rows.append(
            rec(f"b{i:02d}", ts=T0 + i * 900, project="B", model_requested="gpt", model_served="gpt-4o",
                provider="openai", key_name="kb", team="tb", cost_usd=0.5, latency_ms=50.0 + i, tags={"env": "prod"},
                content_input="secret of B about the needle", metadata={"customer": "acme"},
                client_request_id="req-shared" if i == 1 else "")
        )  # fmt: skip
    return rows


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _write(store: Store, records: list[Record]) -> None:
    await store.open()
    try:
        await store.write(records)
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, Callable[[list[Record]], None]]]:
    """(telemetry.store URL, write(records)) for a store of each kind; records are written by a store of their own."""
    if request.param == "sqlite":
        path = tmp_path / "traces.db"
        yield f"sqlite:///{path}", lambda records: run(_write(SQLiteStore(str(path)), records))
        return
    dsn = require_postgres()
    url = f"{dsn}?schema=gw_tr_{uuid.uuid4().hex[:10]}"
    yield url, lambda records: run(_write(PostgresStore(url), records))
    drop_schema(dsn, url.rsplit("=", 1)[1])


@pytest.fixture
def api(make_config: Any, backend: tuple[str, Callable[[list[Record]], None]]) -> Iterator[Any]:
    url, write = backend
    keys = [{"name": role, "key": key, "project": project, "role": role.removesuffix("_b")}
            for role, (key, project) in KEYS.items()]  # fmt: skip
    config = make_config(auth={"keys": keys}, telemetry={"store": url})
    with running(config) as (base, gateway):
        write(dataset())
        yield Client(base, gateway, write)


class Client:
    def __init__(self, base: str, gateway: Any, write: Callable[[list[Record]], None]) -> None:
        self.base, self.gateway, self.write = base, gateway, write

    def get(self, path: str, params: Any = None, role: str = "admin") -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS[role][0]}"}
        return httpx.get(f"{self.base}{path}", params=params, headers=headers, timeout=30)

    def ids(self, params: Any = None, role: str = "admin") -> list[str]:
        answer = self.get("/api/v1/traces", params, role)
        assert answer.status_code == 200, answer.text
        return [row["id"] for row in answer.json()["data"]]

    def pages(self, params: list[tuple[str, str]], role: str = "admin") -> list[list[str]]:
        out: list[list[str]] = []
        cursor = None
        while True:
            answer = self.get("/api/v1/traces", params + ([("cursor", cursor)] if cursor else []), role).json()
            out.append([row["id"] for row in answer["data"]])
            cursor = answer["next_cursor"]
            assert answer["has_more"] is (cursor is not None)
            if cursor is None:
                return out


ALL = dataset()
A = [r for r in ALL if r["project"] == "A"]

# (query parameters, which records they select): each selects some records and not all.
FILTERS: list[tuple[list[tuple[str, str]], Callable[[Record], bool]]] = [
    ([("since", str(T0 + 1200)), ("until", str(T0 + 3000))], lambda r: T0 + 1200 <= r["ts"] < T0 + 3000),
    ([("project", "B")], lambda r: r["project"] == "B"),
    ([("model", "claude")], lambda r: r["model_requested"] == "claude"),
    ([("served_model", "gpt-4o")], lambda r: r["model_served"] == "gpt-4o"),
    ([("provider", "anthropic")], lambda r: r["provider"] == "anthropic"),
    ([("deployment", "dep1")], lambda r: r["deployment"] == "dep1"),
    ([("status", "200")], lambda r: r["status"] == 200),
    ([("status_class", "4xx")], lambda r: 400 <= r["status"] < 500),
    ([("status_class", "5xx")], lambda r: r["status"] >= 500),
    ([("status_class", "error")], lambda r: r["status"] >= 400),
    ([("status_class", "2xx")], lambda r: 200 <= r["status"] < 300),
    ([("error_type", "upstream_unavailable")], lambda r: r["error_type"] == "upstream_unavailable"),
    ([("error_domain", "client")], lambda r: r["error_domain"] == "client"),
    ([("key", "vk_1")], lambda r: r["key_id"] == "vk_1"),
    ([("key", "cfgkey")], lambda r: r["key_name"] == "cfgkey"),
    ([("user", "u1")], lambda r: r["user_id"] == "u1"),
    ([("team", "t1")], lambda r: r["team"] == "t1"),
    ([("trace_id", f"{5:032x}")], lambda r: r["trace_id"] == f"{5:032x}"),
    ([("client_request_id", "req-shared")], lambda r: r["client_request_id"] == "req-shared"),
    ([("client_request_id", "req-shared"), ("project", "A")],
     lambda r: r["client_request_id"] == "req-shared" and r["project"] == "A"),
    ([("min_latency_ms", "80"), ("max_latency_ms", "250")], lambda r: 80 <= r["latency_ms"] <= 250),
    # A record whose cost is unknown (no price) is within no cost bound, not counted as free.
    ([("min_cost_usd", "0.03")], lambda r: r["cost_usd"] is not None and r["cost_usd"] >= 0.03),
    ([("max_cost_usd", "0.05")], lambda r: r["cost_usd"] is not None and r["cost_usd"] <= 0.05),
    ([("min_cost_usd", "0")], lambda r: r["cost_usd"] is not None),
    ([("min_total_tokens", "50"), ("max_total_tokens", "100")], lambda r: 50 <= r["total_tokens"] <= 100),
    ([("min_prompt_tokens", "60")], lambda r: r["prompt_tokens"] >= 60),
    ([("max_completion_tokens", "9")], lambda r: r["completion_tokens"] <= 9),
    ([("tag", "env:prod")], lambda r: r["tags"].get("env") == "prod"),
    ([("tag", "env:prod"), ("tag", "tier:g1")], lambda r: r["tags"] == {"env": "prod", "tier": "g1"}),
    ([("metadata", "customer:acme")], lambda r: r["metadata"].get("customer") == "acme"),
    ([("metadata", "run.id:1")], lambda r: r["metadata"].get("run.id") == "1"),
    ([("text", "needle"), ("since", "0")], lambda r: "needle" in f"{r['content_input']} {r['content_output']}".lower()),
    ([("text", "NUMBER 1"), ("since", "0")], lambda r: "number 1" in r["content_input"].lower()),
    ([("provider", "openai"), ("status_class", "error")], lambda r: r["provider"] == "openai" and r["status"] >= 400),
]  # fmt: skip


def test_every_filter_selects_exactly_its_records(api):
    for params, wanted in FILTERS:
        expected = sorted((r for r in ALL if wanted(r)), key=lambda r: (r["ts"], r["id"]), reverse=True)
        assert 0 < len(expected) < len(ALL), params
        assert api.ids([*params, ("limit", "1000")]) == [r["id"] for r in expected], params


def test_the_live_tail_selects_what_the_store_selects():
    """Each filter of the store holds in the tail's matcher too: a filter added to one and not the other fails."""
    for params, wanted in FILTERS:
        q = parse_trace_query(params)
        assert [r["id"] for r in ALL if matches(q, r)] == [r["id"] for r in ALL if wanted(r)], params


def test_a_filter_on_the_clients_request_id_holds_a_viewer_to_its_project(api):
    assert sorted(api.ids([("client_request_id", "req-shared")])) == ["a01", "a04", "b01"]
    assert sorted(api.ids([("client_request_id", "req-shared")], role="viewer")) == ["a01", "a04"]
    assert api.ids([("client_request_id", "req-shared"), ("project", "A")], role="viewer_b") == ["b01"]
    answer = api.get("/api/v1/traces/export", [("client_request_id", "req-shared"), ("format", "ndjson")])
    assert sorted(orjson.loads(line)["id"] for line in answer.content.splitlines()) == ["a01", "a04", "b01"]


def test_a_record_reads_back_whole_with_its_spans(api):
    answer = api.get("/api/v1/traces/a03")
    assert answer.status_code == 200
    body = answer.json()
    assert body == dataset()[3]  # stream comes back as 0, which equals False
    assert body["spans"] == [{"name": "auth", "ms": 0.1}, {"name": "upstream", "ms": 9.0}]
    missing = api.get("/api/v1/traces/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"


SORTS = [("ts", "desc"), ("latency_ms", "asc"), ("latency_ms", "desc"), ("cost_usd", "desc"), ("cost_usd", "asc"),
         ("total_tokens", "asc")]  # fmt: skip


@pytest.mark.parametrize(("sort", "order"), SORTS)
def test_sorted_pages_cover_every_record_once_in_order(api, sort, order):
    pages = api.pages([("project", "A"), ("sort", sort), ("order", order), ("limit", "5")])
    assert [len(p) for p in pages] == [5, 5, 2]
    key = (lambda r: (r[sort] or 0.0, r["id"])) if sort == "cost_usd" else (lambda r: (r[sort], r["id"]))
    expected = [r["id"] for r in sorted(A, key=key, reverse=order == "desc")]
    assert [i for page in pages for i in page] == expected


def test_records_inserted_between_pages_cause_no_duplicate_and_no_gap(api):
    seen: list[str] = []
    cursor = None
    for round_ in range(10):
        params = [("project", "A"), ("limit", "3")] + ([("cursor", cursor)] if cursor else [])
        answer = api.get("/api/v1/traces", params).json()
        seen += [row["id"] for row in answer["data"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
        # newer records, and one as old as the first page's records: neither may shift what comes next
        api.write([rec(f"n{round_}a", ts=T0 + 10_000 + round_), rec(f"n{round_}b", ts=T0 + 6600 - 0.5)])
    assert len(seen) == len(set(seen))
    original = {r["id"] for r in A}
    assert original <= set(seen)
    assert [i for i in seen if i in original] == [r["id"] for r in sorted(A, key=lambda r: r["ts"], reverse=True)]


def test_exports_parse_back_with_every_row(api):
    params = {"project": "A", "status_class": "2xx"}
    wanted = [r for r in A if r["status"] < 300]
    as_json = api.get("/api/v1/traces/export", {**params, "format": "json"})
    assert as_json.headers["content-type"].startswith("application/json")
    assert "attachment" in as_json.headers["content-disposition"]
    assert sorted(r["id"] for r in as_json.json()) == sorted(r["id"] for r in wanted)
    ndjson = api.get("/api/v1/traces/export", {**params, "format": "ndjson"})
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in ndjson.text.splitlines()]
    assert len(lines) == len(wanted)
    assert lines[0]["spans"][0]["name"] == "auth"
    as_csv = api.get("/api/v1/traces/export", {**params, "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == len(wanted)
    assert list(rows[0]) == list(RECORD_COLUMNS)
    assert orjson.loads(rows[0]["tags"]) == next(r for r in wanted if r["id"] == rows[0]["id"])["tags"]
    assert api.get("/api/v1/traces/export", {"format": "ndjson", "limit": "3"}).text.count("\n") == 3
    empty = api.get("/api/v1/traces/export", {"format": "json", "model": "none"})
    assert empty.json() == []


def test_a_large_export_streams_every_page(api):
    api.write([rec(f"bulk{i:05d}", ts=T0 - 1 - i, project="C") for i in range(2300)])
    rows = api.get("/api/v1/traces/export", {"format": "ndjson", "project": "C"}).text.splitlines()
    assert len(rows) == 2300
    assert len({orjson.loads(r)["id"] for r in rows}) == 2300


def test_one_trace_exports_in_each_format(api):
    assert api.get("/api/v1/traces/a01/export", {"format": "json"}).json()["id"] == "a01"
    assert orjson.loads(api.get("/api/v1/traces/a01/export", {"format": "ndjson"}).text)["id"] == "a01"
    rows = list(csv.DictReader(io.StringIO(api.get("/api/v1/traces/a01/export", {"format": "csv"}).text)))
    assert [r["id"] for r in rows] == ["a01"]
    assert api.get("/api/v1/traces/b01/export", {"format": "csv"}, role="viewer").status_code == 404


def _hour(r: Record) -> int:
    return int(r["ts"] // 3600 * 3600)


def _window(**extra: str) -> dict[str, str]:
    return {"since": str(T0), "until": str(T0 + 7200), "interval": "1h", **extra}


def test_cost_series_sums_per_bucket_and_group(api):
    answer = api.get("/api/v1/analytics/costs", _window(group_by="model", project="A"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["object"], body["kind"], body["interval"], body["group_by"]) == ("analytics.timeseries", "costs",
                                                                                  3600, "model")  # fmt: skip
    expected: dict[tuple[int, str], list[float]] = {}
    for r in A:
        figures = expected.setdefault((_hour(r), r["model_requested"]), [0, 0.0])
        figures[0] += 1
        figures[1] += r["cost_usd"] or 0.0
    got = {(d["bucket"], d["group"]): [d["requests"], d["cost_usd"]] for d in body["data"]}
    assert got.keys() == expected.keys()
    for k, (n, cost) in expected.items():
        assert got[k][0] == n
        assert got[k][1] == pytest.approx(cost)
    assert [d["bucket"] for d in body["data"]] == sorted(d["bucket"] for d in body["data"])


def test_usage_performance_errors_and_models_series(api):
    usage = api.get("/api/v1/analytics/usage", _window(interval="7200", project="A")).json()["data"]
    assert usage == [{"bucket": int(T0), "group": None, "requests": 12,
                      "prompt_tokens": sum(r["prompt_tokens"] for r in A),
                      "completion_tokens": sum(r["completion_tokens"] for r in A),
                      "total_tokens": sum(r["total_tokens"] for r in A)}]  # fmt: skip

    perf = api.get("/api/v1/analytics/performance", _window(project="A")).json()["data"]
    assert [d["bucket"] for d in perf] == [int(T0), int(T0 + 3600)]
    first = sorted(LATENCIES[:6])
    assert perf[0]["avg_latency_ms"] == pytest.approx(sum(first) / 6)
    assert perf[0]["max_latency_ms"] == max(first)
    # Whole hours: read from the usage rollups, whose latency histogram places a percentile within one bin's width.
    assert perf[0]["p50_latency_ms"] == pytest.approx((first[2] + first[3]) / 2, rel=rollups.RATIO - 1)
    assert perf[0]["p95_latency_ms"] == pytest.approx(first[4] + 0.75 * (first[5] - first[4]), rel=rollups.RATIO - 1)
    # Less than a whole hour: from the records themselves, exact (as PostgreSQL's percentile_cont).
    part = {**_window(project="A"), "until": str(T0 + 3599)}
    (exact,) = api.get("/api/v1/analytics/performance", part).json()["data"]
    assert exact["p50_latency_ms"] == pytest.approx((first[2] + first[3]) / 2)
    assert exact["p95_latency_ms"] == pytest.approx(first[4] + 0.75 * (first[5] - first[4]))

    errors = api.get("/api/v1/analytics/errors", _window(interval="2h", group_by="error_type", project="A"))
    by_type = {d["group"]: d for d in errors.json()["data"]}
    assert by_type["upstream_unavailable"]["errors"] == 2
    assert by_type["upstream_unavailable"]["server_errors"] == 2
    assert by_type["rate_limit_exceeded"]["client_errors"] == 1
    assert by_type[""]["errors"] == 0
    overall = api.get("/api/v1/analytics/errors", _window(interval="1d", project="A")).json()["data"]
    assert sum(d["errors"] for d in overall) == 4
    assert sum(d["requests"] for d in overall) == 12

    models = api.get("/api/v1/analytics/models", _window(interval="1d")).json()["data"]
    per_model: dict[str, int] = {}
    for d in models:
        per_model[d["group"]] = per_model.get(d["group"], 0) + d["requests"]
    assert per_model == {"gpt-4o": 10, "claude-3": 6}
    assert sum(d["total_tokens"] for d in models) == sum(r["total_tokens"] for r in ALL)


def test_usage_report_by_key_team_and_project(api):
    window = {"since": str(T0 - 1), "until": str(T0 + 7200)}
    by_project = {d["group"]: d for d in api.get("/api/v1/usage", {**window, "by": "project"}).json()["data"]}
    assert by_project["A"]["requests"] == 12
    assert by_project["B"]["cost_usd"] == pytest.approx(2.0)
    assert by_project["A"]["errors"] == 4
    assert by_project["A"]["total_tokens"] == sum(r["total_tokens"] for r in A)
    by_key = {d["group"]: d["requests"] for d in api.get("/api/v1/usage", {**window, "by": "key"}).json()["data"]}
    assert by_key == {"vk_1": 6, "cfgkey": 6, "kb": 4}
    by_team = api.get("/api/v1/usage", {**window, "by": "team", "project": "A"}).json()["data"]
    assert {d["group"]: d["requests"] for d in by_team} == {"t1": 6, "t2": 6}
    costs = [d["cost_usd"] for d in by_team]
    assert costs == sorted(costs, reverse=True)


def test_negative_since_and_until_are_seconds_before_now(api):
    """since=-3600 is the last hour, on the trace filters, the analytics and the usage report alike."""
    now = time.time()
    api.write([rec("r-hour-old", ts=now - 7200, cost_usd=0.25), rec("r-recent", ts=now - 60, cost_usd=0.5)])
    assert api.ids({"since": "-3600"}) == ["r-recent"]
    assert api.ids({"since": "-86400", "until": "-3600"}) == ["r-hour-old"]
    assert api.ids({"since": "-3600", "text": "x"}) == []  # with a text search too (no default window then)
    tail = parse_trace_query({"since": "-3600"})
    assert tail.since is not None
    assert now - 3600 - 5 < tail.since <= time.time() - 3600
    for kind in ("costs", "usage", "errors", "models", "performance"):
        series = api.get(f"/api/v1/analytics/{kind}", {"since": "-3600", "interval": "1d", "project": "A"})
        assert series.status_code == 200, series.text
        body = series.json()
        assert now - 3600 - 5 < body["since"] <= time.time() - 3600, kind
        assert sum(d["requests"] for d in body["data"]) == 1, kind
    older = api.get("/api/v1/analytics/usage", {"since": "-86400", "until": "-3600", "interval": "1d", "project": "A"})
    assert sum(d["requests"] for d in older.json()["data"]) == 1
    (usage,) = api.get("/api/v1/usage", {"by": "project", "since": "-3600"}).json()["data"]
    assert (usage["group"], usage["requests"], usage["cost_usd"]) == ("A", 1, pytest.approx(0.5))
    assert api.get("/api/v1/usage", {"by": "project", "since": "-60", "until": "-3600"}).status_code == 400


def test_error_type_filters_find_records_written_before_it_was_snake_case(api):
    """Records kept the class name (BudgetExceeded) before error types became the clients' codes: a filter by either
    spelling finds both, and the live tail (new records only) matches the snake_case one."""
    api.write([rec("old-budget", error_type="BudgetExceeded", status=429, ts=T0 + 30),
               rec("new-budget", error_type="budget_exceeded", status=429, ts=T0 + 40)])  # fmt: skip
    for spelling in ("budget_exceeded", "BudgetExceeded"):
        assert api.ids({"error_type": spelling}) == ["new-budget", "old-budget"]
        query = parse_trace_query({"error_type": spelling})
        assert matches(query, rec("live", error_type="budget_exceeded"))
    assert api.ids({"error_type": "rate_limit_exceeded", "since": "0"}) == ["a03"]


def test_a_viewer_sees_only_their_project(api):
    assert set(api.ids({"limit": "1000"}, role="viewer")) == {r["id"] for r in A}
    assert set(api.ids({"project": "B"}, role="viewer")) == {r["id"] for r in A}  # overridden, not obeyed
    assert api.ids({"text": "needle", "since": "0", "limit": "1000"}, role="viewer_b") == ["b03", "b02", "b01", "b00"]
    assert api.get("/api/v1/traces/b00", role="viewer").status_code == 404
    assert api.get("/api/v1/traces/b00", role="viewer_b").status_code == 200
    exported = api.get("/api/v1/traces/export", {"format": "ndjson", "project": "B"}, role="viewer").text
    assert {orjson.loads(line)["project"] for line in exported.splitlines()} == {"A"}
    series = api.get("/api/v1/analytics/usage", _window(interval="1d", project="B"), role="viewer").json()
    assert series["project"] == "A"
    assert sum(d["requests"] for d in series["data"]) == 12
    usage = api.get("/api/v1/usage", {"by": "project", "since": "0"}, role="billing").json()["data"]
    assert [d["group"] for d in usage] == ["A"]


def test_roles_on_the_new_routes(api):
    assert api.get("/api/v1/traces", role="developer").status_code == 403
    assert api.get("/api/v1/traces", role="billing").status_code == 403
    assert api.get("/api/v1/traces/a00/export", role="billing").status_code == 403
    assert api.get("/api/v1/analytics/costs", role="billing").status_code == 200
    assert api.get("/api/v1/analytics/costs", role="developer").status_code == 403
    assert api.get("/api/v1/usage", role="viewer").status_code == 200
    assert api.get("/api/v1/usage", role="developer").status_code == 403


BAD = [
    ("/api/v1/traces", {"limit": "0"}, "limit"),
    ("/api/v1/traces", {"limit": "1001"}, "limit"),
    ("/api/v1/traces", {"sort": "name"}, "sort"),
    ("/api/v1/traces", {"order": "up"}, "order"),
    ("/api/v1/traces", {"status": "ok"}, "status"),
    ("/api/v1/traces", {"status_class": "6xx"}, "status_class"),
    ("/api/v1/traces", {"min_latency_ms": "fast"}, "min_latency_ms"),
    ("/api/v1/traces", {"since": "nan"}, "since"),
    ("/api/v1/traces", {"tag": "novalue"}, "tag"),
    ("/api/v1/traces", {"tag": "bad'key:v"}, "tag"),
    ("/api/v1/traces", {"cursor": "!!!"}, "cursor"),
    ("/api/v1/traces", {"colour": "red"}, "colour"),
    ("/api/v1/traces", {"similar_to": "hello"}, "similar_to"),
    ("/api/v1/traces/export", {"format": "xml"}, "format"),
    ("/api/v1/analytics/costs", {"interval": "soon"}, "interval"),
    ("/api/v1/analytics/costs", {"interval": "1s", "since": "0"}, "interval"),
    ("/api/v1/analytics/costs", {"group_by": "colour"}, "group_by"),
    ("/api/v1/analytics/costs", {"since": "yesterday"}, "since"),
    ("/api/v1/usage", {"by": "model"}, "by"),
]


def test_bad_parameters_are_named(api):
    for path, params, param in BAD:
        answer = api.get(path, params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert answer.json()["error"]["param"] == param, (path, params)
    unknown = api.get("/api/v1/analytics/bogus")
    assert unknown.status_code == 404
    assert api.get("/api/v1/analytics/similarity").status_code in (200, 400)  # still its own route


def test_a_cursor_is_bound_to_its_sort(api):
    cursor = api.get("/api/v1/traces", {"limit": "2", "sort": "latency_ms"}).json()["next_cursor"]
    answer = api.get("/api/v1/traces", {"limit": "2", "sort": "ts", "cursor": cursor})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "cursor"


class FakeSimilarity:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int, float]] = []

    async def nearest(self, project: str, text: str, k: int, min_score: float) -> list[tuple[str, float]]:
        self.asked.append((project, text, k, min_score))
        return [("a05", 0.97), ("a02", 0.91), ("b01", 0.9)]  # b01 is of another project: the filter drops it


def test_similar_to_filters_by_the_nearest_records(api, monkeypatch):
    fake = FakeSimilarity()
    monkeypatch.setattr(api.gateway, "similarity", fake)  # undone before the gateway closes
    answer = api.get("/api/v1/traces", {"similar_to": "a question", "k": "5", "min_score": "0.8"}, role="viewer")
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert [(d["id"], d["similarity"]) for d in data] == [("a05", 0.97), ("a02", 0.91)]
    assert fake.asked == [("A", "a question", 5, 0.8)]
    combined = api.get("/api/v1/traces", {"similar_to": "q", "status": "200", "project": "A"}).json()["data"]
    assert [d["id"] for d in combined] == ["a05", "a02"]
    assert api.get("/api/v1/traces", {"similar_to": "q"}).json()["error"]["param"] == "project"
