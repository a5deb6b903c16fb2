"""The `virtual_keys` table in SQLite: plain functions on a connection, run on the store's own thread."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from gateway.store.rows import VirtualKey

COLUMNS = (
    "id", "name", "key_hash", "key_prefix", "project", "team", "user_id", "role", "allowed_models", "rpm", "tpm",
    "budget_usd", "budget_period", "expires_at", "revoked_at", "metadata", "created_at", "rotated_from",
)  # fmt: skip
_JSON = frozenset({"allowed_models", "metadata"})
# What an edit may change (gateway/identity/keys.py: edited); the rest is who the key is.
EDITABLE = ("name", "allowed_models", "rpm", "tpm", "budget_usd", "budget_period", "metadata")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM virtual_keys"
_INSERT = f"INSERT INTO virtual_keys ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def _row(key: VirtualKey) -> tuple[Any, ...]:
    values = []
    for column in COLUMNS:
        value = getattr(key, column)
        values.append(orjson.dumps(value).decode() if column in _JSON else value)
    return tuple(values)


def _key(row: tuple[Any, ...]) -> VirtualKey:
    data = {c: orjson.loads(v) if c in _JSON else v for c, v in zip(COLUMNS, row, strict=True)}
    return VirtualKey(**data)


def create(conn: sqlite3.Connection, key: VirtualKey) -> None:
    conn.execute(_INSERT, _row(key))


def by_hash(conn: sqlite3.Connection, key_hash: str) -> VirtualKey | None:
    row = conn.execute(f"{_SELECT} WHERE key_hash = ?", (key_hash,)).fetchone()
    return _key(row) if row else None


def by_id(conn: sqlite3.Connection, key_id: str) -> VirtualKey | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
    return _key(row) if row else None


def listing(conn: sqlite3.Connection, project: str | None) -> list[VirtualKey]:
    if project is None:
        rows = conn.execute(f"{_SELECT} ORDER BY created_at DESC").fetchall()
    else:
        rows = conn.execute(f"{_SELECT} WHERE project = ? ORDER BY created_at DESC", (project,)).fetchall()
    return [_key(r) for r in rows]


def revoke(conn: sqlite3.Connection, key_id: str, at: float) -> VirtualKey | None:
    """Revoke at `at` (now, or later for a grace period); an earlier revocation stands."""
    conn.execute(
        "UPDATE virtual_keys SET revoked_at = ? WHERE id = ? AND (revoked_at IS NULL OR revoked_at > ?)",
        (at, key_id, at),
    )
    return by_id(conn, key_id)


def rotate(conn: sqlite3.Connection, old_id: str, new: VirtualKey, revoke_at: float) -> VirtualKey | None:
    """Insert the successor and schedule the old key's revocation, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = by_id(conn, old_id)
        if old is None:
            conn.execute("ROLLBACK")
            return None
        create(conn, new)
        revoke(conn, old_id, revoke_at)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return new


def update(conn: sqlite3.Connection, key: VirtualKey, now: float) -> VirtualKey | None:
    """The editable columns written over the row's, unless it is revoked by `now`."""
    values = [orjson.dumps(getattr(key, c)).decode() if c in _JSON else getattr(key, c) for c in EDITABLE]
    changed = conn.execute(
        f"UPDATE virtual_keys SET {', '.join(f'{c} = ?' for c in EDITABLE)}"
        " WHERE id = ? AND (revoked_at IS NULL OR revoked_at > ?)",
        (*values, key.id, now),
    ).rowcount
    return by_id(conn, key.id) if changed else None
