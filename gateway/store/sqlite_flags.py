"""The `feature_flags` table in SQLite: plain functions on a connection, run on the store's own thread."""

from __future__ import annotations

import sqlite3
import time

import orjson

from gateway.config.telemetry import FlagValue
from gateway.store.rows import FlagOverride

_UPSERT = (
    "INSERT INTO feature_flags (project, flag, value, updated_at, updated_by, seq)"
    " VALUES (?, ?, ?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM feature_flags))"
    " ON CONFLICT (project, flag) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,"
    " updated_by = excluded.updated_by, seq = excluded.seq"
)


def overrides(conn: sqlite3.Connection) -> list[FlagOverride]:
    rows = conn.execute("SELECT project, flag, value FROM feature_flags WHERE value IS NOT NULL ORDER BY seq")
    return [FlagOverride(project, flag, orjson.loads(value)) for project, flag, value in rows]


def set_value(conn: sqlite3.Connection, project: str, flag: str, value: FlagValue | None, author: str) -> None:
    encoded = None if value is None else orjson.dumps(value).decode()
    conn.execute("BEGIN IMMEDIATE")  # seq: max + 1 read and written under one write lock
    try:
        conn.execute(_UPSERT, (project, flag, encoded, time.time(), author))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def revision(conn: sqlite3.Connection) -> int:
    value: int = conn.execute("SELECT coalesce(max(seq), 0) FROM feature_flags").fetchone()[0]
    return value
