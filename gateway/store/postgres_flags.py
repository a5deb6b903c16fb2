"""The `feature_flags` table in PostgreSQL: coroutines on one pooled connection.

A change takes a transaction-scoped advisory lock first, so that `seq` grows in commit order and a poller that saw
revision N has seen every change numbered below N (as for policy_versions)."""

from __future__ import annotations

import time
from typing import Any

from gateway.config.telemetry import FlagValue
from gateway.store.rows import FlagOverride

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gateway.feature_flags:' || current_schema()))"
_UPSERT = (
    "INSERT INTO feature_flags (project, flag, value, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (project, flag) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,"
    " updated_by = excluded.updated_by, seq = nextval('feature_flags_seq')"
)


async def overrides(conn: Any) -> list[FlagOverride]:
    rows = await conn.fetch("SELECT project, flag, value FROM feature_flags WHERE value IS NOT NULL ORDER BY seq")
    return [FlagOverride(row["project"], row["flag"], row["value"]) for row in rows]


async def set_value(conn: Any, project: str, flag: str, value: FlagValue | None, author: str) -> None:
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(_UPSERT, project, flag, value, time.time(), author)


async def revision(conn: Any) -> int:
    value: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM feature_flags")
    return value
