"""The `policy_versions` table in PostgreSQL: coroutines on one pooled connection.

Every save and deletion takes one transaction-scoped advisory lock per schema before it reads the latest version.
One lock for all names, not one per name: besides never giving out a version twice, it makes `seq` grow in commit
order, so a poller that saw revision N has seen every change numbered below N (a sequence alone does not promise
that: two transactions can commit in the other order than they drew their numbers)."""

from __future__ import annotations

import time
from typing import Any

from gateway.store import policies
from gateway.store.base import PolicyVersion

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gateway.policy_versions:' || current_schema()))"
_LATEST = f"{policies.SELECT} WHERE name = $1 ORDER BY version DESC LIMIT 1"
_INSERT = f"INSERT INTO policy_versions ({', '.join(policies.COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6)"


async def _latest(conn: Any, name: str) -> PolicyVersion | None:
    row = await conn.fetchrow(_LATEST, name)
    return policies.version(row) if row else None


async def _insert(conn: Any, saved: PolicyVersion) -> PolicyVersion:
    await conn.execute(_INSERT, saved.name, saved.version, saved.source, saved.author, saved.created_at, saved.deleted)
    return saved


async def save(conn: Any, name: str, source: str, author: str, expected: int | None) -> PolicyVersion:
    async with conn.transaction():
        await conn.execute(_LOCK)
        number = policies.next_version(name, await _latest(conn, name), expected)
        return await _insert(conn, PolicyVersion(name, number, source, author, time.time()))


async def delete(conn: Any, name: str, author: str) -> PolicyVersion | None:
    async with conn.transaction():
        await conn.execute(_LOCK)
        latest = await _latest(conn, name)
        if latest is None or latest.deleted:
            return None
        return await _insert(conn, PolicyVersion(name, latest.version + 1, "", author, time.time(), deleted=True))


async def live(conn: Any) -> list[PolicyVersion]:
    return [policies.version(row) for row in await conn.fetch(policies.LIVE)]


async def history(conn: Any, name: str) -> list[PolicyVersion]:
    rows = await conn.fetch(f"{policies.SELECT} WHERE name = $1 ORDER BY version DESC", name)
    return [policies.version(row) for row in rows]


async def revision(conn: Any) -> int:
    value: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM policy_versions")
    return value
