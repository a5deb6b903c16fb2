"""The `responses` table in PostgreSQL: coroutines on one pooled connection.

PostgreSQL's text holds no NUL character. The ids are the gateway's and never have one, but a client names the
response it reads: an id or project with a NUL cannot be in the table, and is answered without asking the server
(which would refuse it as an error, not as "no such row")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store import responses_sql
from gateway.store.base import StoredResponse

_SQL = responses_sql.statements("$")


def _impossible(*names: str) -> bool:
    return any("\x00" in name for name in names)


async def save(conn: Any, responses: Sequence[StoredResponse]) -> None:
    rows = []
    for r in responses:
        values = responses_sql.row(r)
        if _impossible(*(v for v in values[:4] if isinstance(v, str))):
            values = tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in values)
        rows.append(values)
    async with conn.transaction():
        await conn.executemany(_SQL["upsert"], rows)


async def get(conn: Any, response_id: str, project: str) -> StoredResponse | None:
    if _impossible(response_id, project):
        return None
    found = await conn.fetchrow(_SQL["get"], response_id, project)
    return None if found is None else responses_sql.stored(tuple(found))


async def delete(conn: Any, response_id: str, project: str) -> bool:
    if _impossible(response_id, project):
        return False
    status: str = await conn.execute(_SQL["delete"], response_id, project)
    return status != "DELETE 0"


async def chain(conn: Any, response_id: str, project: str, max_depth: int) -> list[StoredResponse]:
    if _impossible(response_id, project):
        return []
    rows = await conn.fetch(_SQL["chain"], response_id, project, max_depth)
    return [responses_sql.stored(tuple(r)) for r in rows]
