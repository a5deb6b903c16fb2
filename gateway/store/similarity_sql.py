"""The SQL of prompt_similarity_logs that SQLite and PostgreSQL share (gateway/similarity/worker.py fills it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.store.base import Record

# The columns of prompt_similarity_logs, in the order stores write them. `matches` is JSON: [{"id", "score"}, ...].
SIMILARITY_COLUMNS = (
    "id", "ts", "project", "model", "prompt_hash", "nearest_id", "score", "matches", "near_duplicate",
    "exact_duplicate",
)  # fmt: skip

SQLITE_INSERT = (
    f"INSERT INTO prompt_similarity_logs ({', '.join(SIMILARITY_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in SIMILARITY_COLUMNS)})"
)

# What an exact cache (same normalised prompt) and a semantic cache (same or near-duplicate prompt) would have
# served. Booleans on PostgreSQL, 0/1 on SQLite: CASE reads both.
_STATS = (
    "SELECT count(*),"
    " coalesce(sum(CASE WHEN exact_duplicate THEN 1 ELSE 0 END), 0),"
    " coalesce(sum(CASE WHEN near_duplicate THEN 1 ELSE 0 END), 0),"
    " coalesce(sum(CASE WHEN exact_duplicate OR near_duplicate THEN 1 ELSE 0 END), 0)"
    " FROM prompt_similarity_logs WHERE ts >= {0}"
)


def stats_query(project: str | None, since: float, placeholder: str) -> tuple[str, list[Any]]:
    """The stats query and its arguments; placeholder "?" (SQLite) or "$" (PostgreSQL, numbered)."""

    def mark(n: int) -> str:
        return "?" if placeholder == "?" else f"${n}"

    sql = _STATS.format(mark(1))
    args: list[Any] = [since]
    if project is not None:
        sql += f" AND project = {mark(2)}"
        args.append(project)
    return sql, args


def stats(row: Sequence[Any] | None) -> dict[str, float]:
    """{"requests", "exact_duplicates", "near_duplicates", "exact_cache_hit_rate", "semantic_cache_hit_rate"}."""
    requests, exact, near, either = (int(v or 0) for v in row) if row is not None else (0, 0, 0, 0)
    return {
        "requests": requests,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "exact_cache_hit_rate": exact / requests if requests else 0.0,
        "semantic_cache_hit_rate": either / requests if requests else 0.0,
    }


def sqlite_row(row: Record) -> tuple[Any, ...]:
    return (
        row["id"], float(row["ts"]), row["project"], row["model"], row["prompt_hash"], row["nearest_id"],
        float(row["score"]), orjson.dumps(row["matches"]).decode(), int(bool(row["near_duplicate"])),
        int(bool(row["exact_duplicate"])),
    )  # fmt: skip


def postgres_row(row: Record) -> tuple[Any, ...]:
    return (
        row["id"], float(row["ts"]), row["project"], row["model"], row["prompt_hash"], row["nearest_id"],
        float(row["score"]), row["matches"], bool(row["near_duplicate"]), bool(row["exact_duplicate"]),
    )  # fmt: skip
