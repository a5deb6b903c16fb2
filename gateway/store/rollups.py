"""Usage rollups: the records summed per hour, per 6 hours and per UTC day, and per project, key, team, requested
model, served model and provider, written by the store in the same transaction as the records they count. The Spend
page and the analytics API read them instead of scanning millions of records (gateway/store/rollup_sql.py builds
those queries).

A batch's rows are summed here, in the writer (never per request on the event loop): one upsert per distinct
(period, start, dimensions) adds them to the table. Only the rows a write inserts are counted, so a batch written
again after a failure (the stores skip the rows they hold already) is counted once, and a refused row never.

Latency is kept as a histogram of fixed bins (each bound 2^(1/4), 19% above the last, from 1 ms to 110 s), which
add up like the counts; p50 and p95 are read from the summed bins, interpolated within the bin that holds them: at
most one bin's width from the exact value, and within a few per cent for a smooth distribution.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Literal

from gateway.store.records import RECORD_COLUMNS

Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]

HOUR, DAY = 3600, 86_400
# Hours, quarter days (the console's 7-day charts: 28 points) and UTC days; each divides the next.
PERIODS = (HOUR, 6 * HOUR, DAY)
RATIO = 2**0.25
EDGES = tuple(RATIO**i for i in range(68))  # ms: 1.0 ... 2^(67/4) = 110 s
BINS = tuple(f"lat_{i:02d}" for i in range(len(EDGES) + 1))  # bin i: EDGES[i-1] <= ms < EDGES[i]
# The dimensions a rollup is kept by; `key` is the virtual key's id, or the config key's name (which has no id).
DIMENSIONS = ("project", "key", "team", "model_requested", "model_served", "provider")
SUMS = (
    "requests", "errors", "client_errors", "server_errors", "prompt_tokens", "completion_tokens", "total_tokens",
    "cost_usd", "latency_sum_ms",
)  # fmt: skip
FIGURES = (*SUMS, "latency_max_ms", *BINS)
COLUMNS = ("period_s", "start_ts", *DIMENSIONS, *FIGURES)
RETENTION_SQL = "DELETE FROM usage_rollups WHERE start_ts + period_s <= ?"
MAX_TOKENS, MAX_COST_USD, MAX_LATENCY_MS = 2**31, 1e6, 1e9
_KEY_LENGTH = 2 + len(DIMENSIONS)
_SLICE = 256  # rows summed between pauses: a big batch never holds the event loop long


def latency_bin(ms: float) -> int:
    return bisect_right(EDGES, ms)


def _empty() -> list[Any]:
    return [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0] + [0] * len(BINS)


def summed(rows: Sequence[Row]) -> list[Row]:
    """The rollup rows (COLUMNS' order) of a batch's record rows (RECORD_COLUMNS' order), hourly and daily, sorted
    by their key: writers that upsert the same rows take their locks in the same order (no deadlock)."""
    hours: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        _count(hours, row)
    return _with_longer(hours)


async def summed_async(rows: Sequence[Row]) -> list[Row]:
    """summed(), pausing every few hundred rows (the PostgreSQL writer runs on the event loop)."""
    hours: dict[tuple[Any, ...], list[Any]] = {}
    for i, row in enumerate(rows):
        if i and not i % _SLICE:
            await asyncio.sleep(0)
        _count(hours, row)
    return _with_longer(hours)


def _compile_count() -> Callable[[dict[tuple[Any, ...], list[Any]], Row], None]:
    """_count, written out with the record columns' positions as constants: a dict lookup per column read and a call
    per bound held cost more than the sums."""
    at = {name: RECORD_COLUMNS.index(name) for name in RECORD_COLUMNS}
    lines = [
        "def _count(hours, row, HOUR=HOUR, _empty=_empty, bisect_right=bisect_right, EDGES=EDGES):",
        f"    key = (HOUR, int(row[{at['ts']}] // HOUR) * HOUR, row[{at['project']}],"
        f" row[{at['key_id']}] or row[{at['key_name']}], row[{at['team']}], row[{at['model_requested']}],"
        f" row[{at['model_served']}], row[{at['provider']}])",
        "    into = hours.get(key)",
        "    if into is None:",
        "        into = hours[key] = _empty()",
        f"    status = row[{at['status']}]",
        f"    latency = row[{at['latency_ms']}]",
        f"    if not 0 <= latency < {MAX_LATENCY_MS!r}:",
        f"        latency = 0 if latency < 0 else {MAX_LATENCY_MS!r}",
        "    into[0] += 1",
        "    if status >= 400:",
        "        into[1] += 1",
        "        if status < 500:",
        "            into[2] += 1",
        "        else:",
        "            into[3] += 1",
    ]
    for i, column, limit in (
        (4, "prompt_tokens", MAX_TOKENS), (5, "completion_tokens", MAX_TOKENS), (6, "total_tokens", MAX_TOKENS),
        (7, "cost_usd", MAX_COST_USD),
    ):  # fmt: skip
        value = f"row[{at[column]}] or 0.0" if column == "cost_usd" else f"row[{at[column]}]"
        lines += [f"    v = {value}", f"    into[{i}] += v if 0 <= v < {limit!r} else (0 if v < 0 else {limit!r})"]
    lines += [
        "    into[8] += latency",
        "    if latency > into[9]:",
        "        into[9] = latency",
        "    into[10 + bisect_right(EDGES, latency)] += 1",
    ]
    scope: dict[str, Any] = {"HOUR": HOUR, "_empty": _empty, "bisect_right": bisect_right, "EDGES": EDGES}
    exec("\n".join(lines), scope)  # code made from the columns above, never from input
    count: Callable[[dict[tuple[Any, ...], list[Any]], Row], None] = scope["_count"]
    count.__doc__ = """One record row counted in its hour's figures (made empty when it is the first). A value no
    request can have (a negative or huge token count, cost or latency, which a record keeps as it came) is held within
    bounds here, so that no sum can overflow its column and fail the write of records the table takes."""
    return count


_count = _compile_count()


def _with_longer(hours: dict[tuple[Any, ...], list[Any]]) -> list[Row]:
    """The hourly rows and, summed from them, those of the longer periods."""
    out = dict(hours)
    for period in PERIODS[1:]:
        for (_, hour, *dims), figures in hours.items():
            key = (period, hour // period * period, *dims)
            into = out.get(key)
            if into is None:
                out[key] = list(figures)
            else:
                for i, value in enumerate(figures):
                    into[i] = max(into[i], value) if i == 9 else into[i] + value
    return sorted((*key, *figures) for key, figures in out.items())


def upsert_sql(dialect: Dialect) -> str:
    """Add one rollup row to the table's: a new row, or its figures added to the row already there."""
    marks = ", ".join("?" if dialect == "sqlite" else f"${i + 1}" for i in range(len(COLUMNS)))
    greatest = "max" if dialect == "sqlite" else "greatest"
    added = [f"{c} = usage_rollups.{c} + excluded.{c}" for c in FIGURES if c != "latency_max_ms"]
    added.append(f"latency_max_ms = {greatest}(usage_rollups.latency_max_ms, excluded.latency_max_ms)")
    return (
        f"INSERT INTO usage_rollups ({', '.join(COLUMNS)}) VALUES ({marks})"
        f" ON CONFLICT ({', '.join(COLUMNS[:_KEY_LENGTH])}) DO UPDATE SET {', '.join(added)}"
    )


def bin_sql() -> list[str]:
    """Per record (SQL over model_cost_logs): 1 in the column of its latency's bin, 0 in the others."""
    out = [f"CASE WHEN latency_ms < {EDGES[0]!r} THEN 1 ELSE 0 END"]
    for lo, hi in zip(EDGES, EDGES[1:], strict=False):
        out.append(f"CASE WHEN latency_ms >= {lo!r} AND latency_ms < {hi!r} THEN 1 ELSE 0 END")
    out.append(f"CASE WHEN latency_ms >= {EDGES[-1]!r} THEN 1 ELSE 0 END")
    return out


def record_figures_sql() -> list[str]:
    """Per record (SQL over model_cost_logs): its figures as a rollup row holds them, in FIGURES' order."""
    return [
        "1",
        "CASE WHEN status >= 400 THEN 1 ELSE 0 END",
        "CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END",
        "CASE WHEN status >= 500 THEN 1 ELSE 0 END",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "coalesce(cost_usd, 0.0)",
        "latency_ms",
        "latency_ms",
        *bin_sql(),
    ]


KEY_SQL = "CASE WHEN key_id = '' THEN key_name ELSE key_id END"
_DIMENSION_SQL = {"key": KEY_SQL}


def migration_sql(dialect: Dialect) -> str:
    """The migration that makes the table and fills it from the records already written (0012_usage_rollups)."""
    big, real = ("INTEGER", "REAL") if dialect == "sqlite" else ("bigint", "double precision")
    columns = [f"period_s {big} NOT NULL", f"start_ts {big} NOT NULL"]
    columns += [f"{d} {'TEXT' if dialect == 'sqlite' else 'text'} NOT NULL" for d in DIMENSIONS]
    # The bins as 4-byte integers: they are most of a row, and PostgreSQL sums int4 into int8, but int8 into numeric
    # (several times slower). A bin of one key and model counts at most 2^31 requests a day (25,000 a second).
    small = "INTEGER" if dialect == "sqlite" else "integer"
    kinds = {c: real if c in ("cost_usd", "latency_sum_ms", "latency_max_ms") else small if c in BINS else big
             for c in FIGURES}  # fmt: skip
    columns += [f"{c} {kinds[c]} NOT NULL DEFAULT 0" for c in FIGURES]
    key = ", ".join(COLUMNS[:_KEY_LENGTH])
    header = "-- Generated by gateway/store/rollups.py (migration_sql): tests/unit/store/test_rollups.py checks.\n"
    statements = [
        f"CREATE TABLE usage_rollups (\n    {(',' + chr(10) + '    ').join(columns)},\n    PRIMARY KEY ({key})\n)",
        "CREATE INDEX usage_rollups_project ON usage_rollups (period_s, project, start_ts)",
    ]
    # The hours from the records (each record's bin found once: a binary search on PostgreSQL, a CASE on SQLite),
    # then the longer periods from the hours.
    if dialect == "sqlite":
        bin_of = "CASE " + " ".join(f"WHEN latency_ms < {e!r} THEN {i}" for i, e in enumerate(EDGES))
        bin_of += f" ELSE {len(EDGES)} END"
    else:
        bin_of = f"width_bucket(latency_ms, ARRAY[{', '.join(repr(e) for e in EDGES)}]::double precision[])"
    start = f"CAST(ts / {HOUR} AS INTEGER) * {HOUR}" if dialect == "sqlite" else (
        f"CAST(floor(ts / {HOUR}) AS BIGINT) * {HOUR}")  # fmt: skip
    per_record = dict(zip(FIGURES, record_figures_sql(), strict=True))
    per_record.update({b: f"CASE WHEN b = {i} THEN 1 ELSE 0 END" for i, b in enumerate(BINS)})
    figures = [f"max({f})" if c == "latency_max_ms" else f"sum({f})" for c, f in per_record.items()]
    dims = [_DIMENSION_SQL.get(d, d) for d in DIMENSIONS]
    group = ", ".join(str(i) for i in range(2, 3 + len(DIMENSIONS)))
    statements.append(
        f"INSERT INTO usage_rollups ({', '.join(COLUMNS)})\nSELECT {HOUR}, {start}, {', '.join(dims)},\n    "
        + ",\n    ".join(figures)
        + f"\nFROM (SELECT *, {bin_of} AS b FROM model_cost_logs) r GROUP BY {group}"
    )
    for period in PERIODS[1:]:
        summed = [f"max({c})" if c == "latency_max_ms" else f"sum({c})" for c in FIGURES]
        statements.append(
            f"INSERT INTO usage_rollups ({', '.join(COLUMNS)})\nSELECT {period}, start_ts / {period} * {period},"
            f" {', '.join(DIMENSIONS)},\n    "
            + ", ".join(summed)
            + f"\nFROM usage_rollups WHERE period_s = {HOUR} GROUP BY {group}"
        )
    return header + ";\n".join(statements) + ";\n"


def percentile(bins: Sequence[int], p: float, max_ms: float) -> float | None:
    """The p-quantile (0..1) of the latencies the bins count, as percentile_cont places it (between the values of
    rank floor(p * (n-1)) and the next), each value taken where it would sit if its bin's values were evenly spread
    (the last bin ends at the largest latency seen): within one bin's width (RATIO) of the exact figure."""
    n = sum(bins)
    if n == 0:
        return None
    rank = p * (n - 1)
    low = int(rank)
    a = _value_at(bins, low, max_ms)
    return a if low + 1 >= n else a + (rank - low) * (_value_at(bins, low + 1, max_ms) - a)


def _value_at(bins: Sequence[int], k: int, max_ms: float) -> float:
    seen = 0
    for i, count in enumerate(bins):
        if seen + count > k:
            lo = 0.0 if i == 0 else EDGES[i - 1]
            hi = EDGES[i] if i < len(EDGES) else max_ms
            hi = max(lo, min(hi, max_ms))
            return lo + (hi - lo) * (k - seen + 0.5) / count
        seen += count
    return max_ms
