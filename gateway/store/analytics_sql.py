"""The time series and usage sums that SQLite and PostgreSQL share, over gateway/store/trace_sql.py's filters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from gateway.errors import InvalidRequest
from gateway.store.base import Record
from gateway.store.rollup_sql import bucket_sql
from gateway.store.rollups import KEY_SQL
from gateway.store.trace_sql import Args, Dialect, TraceQuery, where

Kind = Literal["costs", "usage", "performance", "errors", "models", "cache"]
GroupBy = Literal[
    "none", "model", "served_model", "provider", "deployment", "project", "team", "key", "user", "status", "error_type"
]
UsageBy = Literal["key", "team", "project"]

MAX_BUCKETS = 10_000
_INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_INTERVAL = re.compile(r"(\d+)([smhd]?)")
_GROUP_SQL = {
    "none": "''", "model": "model_requested", "served_model": "model_served", "provider": "provider",
    "deployment": "deployment", "project": "project", "team": "team", "key": KEY_SQL, "user": "user_id",
    "status": "status", "error_type": "error_type",
}  # fmt: skip


def parse_interval(raw: str) -> int:
    """ "1m", "5m", "1h", "1d" or plain seconds -> seconds."""
    match = _INTERVAL.fullmatch(raw.strip())
    seconds = int(match[1]) * _INTERVALS[match[2] or "s"] if match else 0
    if seconds <= 0:
        raise InvalidRequest("interval must be like 1m, 5m, 1h, 1d or a number of seconds.", param="interval")
    return seconds


def _figures(kind: Kind, dialect: Dialect) -> list[str]:
    requests = "count(*) AS requests"
    total = "CAST(coalesce(sum(total_tokens), 0) AS BIGINT) AS total_tokens"
    cost = "coalesce(sum(coalesce(cost_usd, 0.0)), 0.0) AS cost_usd"
    if kind == "costs":
        return [requests, cost]
    if kind == "usage":
        tokens = [f"CAST(coalesce(sum({c}), 0) AS BIGINT) AS {c}" for c in ("prompt_tokens", "completion_tokens")]
        return [requests, *tokens, total]
    if kind == "errors":
        return [
            requests,
            "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors",
            "sum(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END) AS client_errors",
            "sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS server_errors",
        ]
    if kind == "models":
        return [requests, cost, total]
    if kind == "cache":  # the response cache: what it served and what that saved
        counts = [
            f"sum(CASE WHEN cache = '{status}' THEN 1 ELSE 0 END) AS {name}"
            for status, name in (("hit", "hits"), ("semantic-hit", "semantic_hits"), ("miss", "misses"),
                                 ("bypass", "bypasses"))
        ]  # fmt: skip
        return [requests, *counts, cost, "coalesce(sum(coalesce(saved_usd, 0.0)), 0.0) AS saved_usd"]
    # performance: percentiles interpolated as PostgreSQL's percentile_cont does, in SQL both stores run. The
    # position is positive: SQLite's CAST truncates like floor() (which SQLite may lack); PostgreSQL's rounds.
    floor = "CAST({} AS INTEGER)" if dialect == "sqlite" else "CAST(floor({}) AS INTEGER)"
    return [requests, "avg(latency_ms) AS avg_latency_ms", "max(latency_ms) AS max_latency_ms"] + [
        f"sum(CASE WHEN rn = {lo} THEN latency_ms * (1 - ({pos} - {lo})) WHEN rn = {lo} + 1"
        f" THEN latency_ms * ({pos} - {lo}) ELSE 0 END) AS p{int(p * 100)}_latency_ms"
        for p in (0.5, 0.95)
        for pos in [f"({p} * (n - 1))"]
        for lo in [floor.format(pos)]
    ]


def _filters(since: float | None, until: float | None, project: str | None, args: Args) -> str:
    q = TraceQuery(since=since, until=until, project=project)
    clauses = where(q, args)
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def build_timeseries(
    kind: Kind,
    interval_s: int,
    group_by: GroupBy,
    since: float | None,
    until: float | None,
    project: str | None,
    dialect: Dialect,
) -> tuple[str, list[Any]]:
    """One row per (bucket, group): bucket = floor(ts / interval) * interval, group '' without group_by. `models`
    groups by the served model unless told otherwise."""
    if kind == "models" and group_by == "none":
        group_by = "served_model"
    args = Args(dialect)
    where = _filters(since, until, project, args)
    bucket = bucket_sql("ts", int(interval_s), dialect)
    group = _GROUP_SQL[group_by]
    extra = ""
    if kind == "performance":
        extra = (
            f", row_number() OVER (PARTITION BY {bucket}, {group} ORDER BY latency_ms) - 1 AS rn,"
            f" count(*) OVER (PARTITION BY {bucket}, {group}) AS n"
        )
    columns = "latency_ms, status, cost_usd, prompt_tokens, completion_tokens, total_tokens, cache, saved_usd"
    sql = (
        f"WITH r AS (SELECT {bucket} AS bucket, {group} AS grp, {columns}{extra} FROM model_cost_logs{where})"
        f" SELECT bucket, grp, {', '.join(_figures(kind, dialect))} FROM r GROUP BY bucket, grp ORDER BY bucket, grp"
    )
    return sql, args.values


def timeseries_rows(kind: Kind, group_by: GroupBy, rows: Iterable[Mapping[str, Any]]) -> list[Record]:
    """The store's rows as the API gives them: {"bucket", "group", ...figures}."""
    out = []
    for row in rows:
        item: Record = {
            "bucket": int(row["bucket"]),
            "group": None if group_by == "none" and kind != "models" else row["grp"],
        }
        item.update({k: _plain(v) for k, v in row.items() if k not in ("bucket", "grp")})
        if kind == "errors":
            item["error_rate"] = item["errors"] / item["requests"] if item["requests"] else 0.0
        elif kind == "cache":
            served = item["hits"] + item["semantic_hits"]
            looked_up = served + item["misses"]
            item["hit_rate"] = served / looked_up if looked_up else 0.0
        out.append(item)
    return out


def build_usage(
    by: UsageBy, since: float | None, until: float | None, project: str | None, dialect: Dialect
) -> tuple[str, list[Any]]:
    """Per key, team or project: requests, tokens, cost and errors; the costliest first."""
    args = Args(dialect)
    where = _filters(since, until, project, args)
    group = _GROUP_SQL[by]
    sums = ", ".join(f"CAST(coalesce(sum({c}), 0) AS BIGINT) AS {c}" for c in ("prompt_tokens", "completion_tokens"))
    sql = (
        f"SELECT {group} AS grp, count(*) AS requests, {sums},"
        " CAST(coalesce(sum(total_tokens), 0) AS BIGINT) AS total_tokens,"
        " coalesce(sum(coalesce(cost_usd, 0.0)), 0.0) AS cost_usd,"
        " sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors"
        f" FROM model_cost_logs{where} GROUP BY 1 ORDER BY cost_usd DESC, grp"
    )
    return sql, args.values


def usage_rows(rows: Iterable[Mapping[str, Any]]) -> list[Record]:
    return [{"group": row["grp"], **{k: _plain(v) for k, v in row.items() if k != "grp"}} for row in rows]


def _plain(value: Any) -> Any:
    """Numbers as JSON has them (PostgreSQL sums may come back as Decimal)."""
    if value is None or isinstance(value, int | float | str):
        return value
    return float(value)
