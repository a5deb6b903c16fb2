"""The time series and usage sums read from the usage rollups (gateway/store/rollups.py) instead of the records.

A range is cut in three: its whole periods of the longest rollup its buckets are made of (UTC days for daily buckets,
quarter days for 6-hour ones) from those rollups, its other whole hours from the hourly ones, and the partial hours
at either end from the records themselves, so the figures are the records' own, to the second, whatever the range.
The ends cost at most two hours of records; a range that starts and ends on a bucket's bounds (the console's) reads
rollups only. Buckets of less than an hour, or groups the rollups do not keep (deployment, user, status, error
type), are summed from the records (analytics_sql.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.store import rollups
from gateway.store.rollups import BINS, DAY, HOUR, KEY_SQL
from gateway.store.trace_sql import Args, Dialect

# group_by -> (the rollups' column, the records' expression)
GROUPS = {
    "none": ("''", "''"), "model": ("model_requested", "model_requested"),
    "served_model": ("model_served", "model_served"), "provider": ("provider", "provider"),
    "project": ("project", "project"), "team": ("team", "team"), "key": ("key", KEY_SQL),
}  # fmt: skip
_INTEGERS = frozenset({"requests", "errors", "client_errors", "server_errors", "prompt_tokens", "completion_tokens",
                       "total_tokens", *BINS})  # fmt: skip
_KIND_FIGURES = {
    "costs": ("requests", "cost_usd"),
    "usage": ("requests", "prompt_tokens", "completion_tokens", "total_tokens"),
    "errors": ("requests", "errors", "client_errors", "server_errors"),
    "models": ("requests", "cost_usd", "total_tokens"),
    "performance": ("requests", "latency_sum_ms", "latency_max_ms", *BINS),
}
_USAGE_FIGURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors")
_RECORD_FIGURES = dict(zip(rollups.FIGURES, rollups.record_figures_sql(), strict=True))

Part = tuple[int | None, float | None, float | None]  # (rollup period, or None: the records; from; to)


def plan(since: float | None, until: float | None, interval_s: int) -> list[Part] | None:
    """Where each stretch of [since, until) is read from; None when the rollups cannot serve the buckets (shorter
    than an hour, or not whole hours) or the range holds no whole hour."""
    if interval_s % HOUR:
        return None
    h0 = None if since is None else math.ceil(since / HOUR) * HOUR
    h1 = None if until is None else math.floor(until / HOUR) * HOUR
    if h0 is not None and h1 is not None and h0 >= h1:
        return None
    parts: list[Part] = []
    if since is not None and h0 is not None and since < h0:
        parts.append((None, since, h0))
    if until is not None and h1 is not None and h1 < until:
        parts.append((None, h1, until))
    # The longest period the buckets are made of: its whole periods from its rollups, the hours around from the hourly.
    period = max(p for p in rollups.PERIODS if interval_s % p == 0)
    d0 = None if h0 is None else math.ceil(h0 / period) * period
    d1 = None if h1 is None else math.floor(h1 / period) * period
    if period > HOUR and (d0 is None or d1 is None or d0 < d1):
        parts.append((period, d0, d1))
        if h0 is not None and d0 is not None and h0 < d0:
            parts.append((HOUR, h0, d0))
        if h1 is not None and d1 is not None and d1 < h1:
            parts.append((HOUR, d1, h1))
    else:
        parts.append((HOUR, h0, h1))
    return parts


def _parts(
    parts: list[Part], figures: Iterable[str], group_by: str, step: int | None, project: str | None, args: Args
) -> str:
    selects = []
    for period, lo, hi in parts:
        rollup = period is not None
        column = "start_ts" if rollup else "ts"
        clauses = [f"period_s = {period}"] if rollup else []
        if lo is not None:
            clauses.append(f"{column} >= {args.add(int(lo) if rollup else lo)}")
        if hi is not None:
            clauses.append(f"{column} < {args.add(int(hi) if rollup else hi)}")
        if project is not None:
            clauses.append(f"project = {args.add(project)}")
        values = [f"{f if rollup else _RECORD_FIGURES[f]} AS {f}" for f in figures]
        if step is not None:
            values.insert(0, f"{bucket_sql(column, step, args.dialect, integer=rollup)} AS bucket")
        values.insert(1 if step is not None else 0, f"{GROUPS[group_by][0 if rollup else 1]} AS grp")
        table = "usage_rollups" if rollup else "model_cost_logs"
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        selects.append(f"SELECT {', '.join(values)} FROM {table}{where}")
    return " UNION ALL ".join(selects)


def bucket_sql(column: str, step: int, dialect: Dialect, integer: bool = False) -> str:
    """floor(column / step) * step; SQLite may lack floor(), and the times are positive: CAST truncates the same."""
    if integer:  # whole seconds already: integer division floors them
        return f"{column} / {step} * {step}"
    if dialect == "sqlite":
        return f"CAST({column} / {step} AS INTEGER) * {step}"
    return f"CAST(floor({column} / {step}) AS BIGINT) * {step}"


def _sums(figures: Iterable[str]) -> list[str]:
    out = []
    for f in figures:
        if f == "latency_max_ms":
            out.append("max(latency_max_ms) AS latency_max_ms")
        elif f in _INTEGERS:
            out.append(f"CAST(sum({f}) AS BIGINT) AS {f}")
        else:
            out.append(f"sum({f}) AS {f}")
    return out


def build_timeseries(
    kind: str,
    interval_s: int,
    group_by: str,
    since: float | None,
    until: float | None,
    project: str | None,
    dialect: Dialect,
) -> tuple[str, list[Any]] | None:
    """The time series from the rollups (and the records at the range's partial ends); None when the rollups
    cannot serve it. Rows: bucket, grp and the kind's figures (performance: its bins; see timeseries_figures)."""
    if kind == "models" and group_by == "none":  # as the records' query: by the served model
        group_by = "served_model"
    figures = _KIND_FIGURES.get(kind)  # the cache's figures (hits, savings) are not rolled up: the records serve them
    parts = plan(since, until, interval_s)
    if figures is None or parts is None or group_by not in GROUPS:
        return None
    args = Args(dialect)
    union = _parts(parts, figures, group_by, interval_s, project, args)
    sql = f"SELECT bucket, grp, {', '.join(_sums(figures))} FROM ({union}) u GROUP BY bucket, grp ORDER BY bucket, grp"
    return sql, args.values


def timeseries_figures(kind: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the records' own query gives them: performance's bins made into its average and percentiles."""
    if kind != "performance":
        return [dict(row) for row in rows]
    out = []
    for row in rows:
        bins = [int(row[b]) for b in BINS]
        top = float(row["latency_max_ms"])
        out.append({
            "bucket": row["bucket"], "grp": row["grp"], "requests": row["requests"],
            "avg_latency_ms": float(row["latency_sum_ms"]) / row["requests"], "max_latency_ms": top,
            "p50_latency_ms": rollups.percentile(bins, 0.5, top), "p95_latency_ms": rollups.percentile(bins, 0.95, top),
        })  # fmt: skip
    return out


def build_usage(
    by: str, since: float | None, until: float | None, project: str | None, dialect: Dialect
) -> tuple[str, list[Any]] | None:
    """Per key, team or project from the rollups (whole days and hours) and the records (the partial ends)."""
    parts = plan(since, until, DAY)  # no buckets: whole days may come from the daily rollups wherever they fall
    if parts is None:
        return None
    args = Args(dialect)
    union = _parts(parts, _USAGE_FIGURES, by, None, project, args)
    sql = f"SELECT grp, {', '.join(_sums(_USAGE_FIGURES))} FROM ({union}) u GROUP BY grp ORDER BY cost_usd DESC, grp"
    return sql, args.values
