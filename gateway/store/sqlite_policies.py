"""The `policy_versions` table in SQLite: plain functions on a connection, run on the store's own thread.

A save runs under BEGIN IMMEDIATE, so that two workers sharing the file never give out the same version."""

from __future__ import annotations

import sqlite3
import time

from gateway.store import policies
from gateway.store.base import PolicyVersion

_LATEST = f"{policies.SELECT} WHERE name = ? ORDER BY version DESC LIMIT 1"
_INSERT = f"INSERT INTO policy_versions ({', '.join(policies.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"


def _latest(conn: sqlite3.Connection, name: str) -> PolicyVersion | None:
    row = conn.execute(_LATEST, (name,)).fetchone()
    return policies.version(row) if row else None


def _insert(conn: sqlite3.Connection, saved: PolicyVersion) -> PolicyVersion:
    row = (saved.name, saved.version, saved.source, saved.author, saved.created_at, int(saved.deleted))
    conn.execute(_INSERT, row)
    return saved


def save(conn: sqlite3.Connection, name: str, source: str, author: str, expected: int | None) -> PolicyVersion:
    conn.execute("BEGIN IMMEDIATE")
    try:
        number = policies.next_version(name, _latest(conn, name), expected)
        saved = _insert(conn, PolicyVersion(name, number, source, author, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return saved


def delete(conn: sqlite3.Connection, name: str, author: str) -> PolicyVersion | None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        latest = _latest(conn, name)
        if latest is None or latest.deleted:
            conn.execute("ROLLBACK")
            return None
        saved = _insert(conn, PolicyVersion(name, latest.version + 1, "", author, time.time(), deleted=True))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return saved


def live(conn: sqlite3.Connection) -> list[PolicyVersion]:
    return [policies.version(row) for row in conn.execute(policies.LIVE)]


def history(conn: sqlite3.Connection, name: str) -> list[PolicyVersion]:
    rows = conn.execute(f"{policies.SELECT} WHERE name = ? ORDER BY version DESC", (name,))
    return [policies.version(row) for row in rows]


def revision(conn: sqlite3.Connection) -> int:
    value: int = conn.execute("SELECT coalesce(max(seq), 0) FROM policy_versions").fetchone()[0]
    return value
