"""The `virtual_keys` table in PostgreSQL: coroutines on one pooled connection (jsonb columns go through the
connection's jsonb codec, set in postgres.py)."""

from __future__ import annotations

from typing import Any

from gateway.store.rows import VirtualKey
from gateway.store.sqlite_keys import COLUMNS, EDITABLE

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM virtual_keys"
_INSERT = f"INSERT INTO virtual_keys ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i}' for i in range(1, 19))})"
# An earlier revocation stands: a later `at` leaves revoked_at as it is.
_REVOKE = (
    "UPDATE virtual_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $2 THEN $2 ELSE revoked_at END"
    f" WHERE id = $1 RETURNING {', '.join(COLUMNS)}"
)

_UPDATE = (
    f"UPDATE virtual_keys SET {', '.join(f'{c} = ${i}' for i, c in enumerate(EDITABLE, 3))}"
    f" WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2) RETURNING {', '.join(COLUMNS)}"
)


def _key(row: Any) -> VirtualKey:
    return VirtualKey(**dict(row.items()))


async def create(conn: Any, key: VirtualKey) -> None:
    await conn.execute(_INSERT, *(getattr(key, c) for c in COLUMNS))


async def by_hash(conn: Any, key_hash: str) -> VirtualKey | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE key_hash = $1", key_hash)
    return _key(row) if row else None


async def by_id(conn: Any, key_id: str) -> VirtualKey | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE id = $1", key_id)
    return _key(row) if row else None


async def listing(conn: Any, project: str | None) -> list[VirtualKey]:
    if project is None:
        rows = await conn.fetch(f"{_SELECT} ORDER BY created_at DESC")
    else:
        rows = await conn.fetch(f"{_SELECT} WHERE project = $1 ORDER BY created_at DESC", project)
    return [_key(r) for r in rows]


async def revoke(conn: Any, key_id: str, at: float) -> VirtualKey | None:
    """Revoke at `at` (now, or later for a grace period); an earlier revocation stands."""
    row = await conn.fetchrow(_REVOKE, key_id, at)
    return _key(row) if row else None


async def rotate(conn: Any, old_id: str, new: VirtualKey, revoke_at: float) -> VirtualKey | None:
    """Insert the successor and schedule the old key's revocation, in one transaction (the old row locked)."""
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM virtual_keys WHERE id = $1 FOR UPDATE", old_id) is None:
            return None
        await create(conn, new)
        await revoke(conn, old_id, revoke_at)
    return new


async def update(conn: Any, key: VirtualKey, now: float) -> VirtualKey | None:
    """The editable columns written over the row's, unless it is revoked by `now`."""
    row = await conn.fetchrow(_UPDATE, key.id, now, *(getattr(key, c) for c in EDITABLE))
    return _key(row) if row else None
