"""The `responses` table in SQLite: plain functions on a connection, run on the store's own thread."""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Sequence

from gateway.store import responses_sql
from gateway.store.base import StoredResponse
from gateway.store.sqlite_batches import insert_in_statements

_SQL = responses_sql.statements("?")


def save(conn: sqlite3.Connection, responses: Sequence[StoredResponse]) -> None:
    conn.execute("BEGIN")
    try:
        if list(map(_PREVIOUS, responses)).count(None) == len(responses):  # first turns alone: one run, found in C
            _upsert(conn, _FIRST, responses_sql.first_rows(responses))
        else:
            # Runs of consecutive rows of one shape, in the batch's order (an id saved twice keeps its last version).
            for first, run in itertools.groupby(responses, _is_first):
                if first:
                    _upsert(conn, _FIRST, responses_sql.first_rows(run))
                else:
                    _upsert(conn, _ANY, [responses_sql.row(r) for r in run])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_PREVIOUS = operator.attrgetter("previous_response_id")
# A run of rows in statements of 64 rows, the rest in powers of two (sqlite_batches): fourteen statements in all,
# which stay in sqlite3's cache (128). The row alone, in batches of 64 (callgrind,
# --toggle-collect=functools_reduce): 26,574 -> 20,866 instructions.
_SIZES = (64, 32, 16, 8, 4, 2, 1)
_FIRST = {k: responses_sql.upsert_rows("?", responses_sql.FIRST_COLUMNS, k) for k in _SIZES}
_ANY = {k: responses_sql.upsert_rows("?", responses_sql.COLUMNS, k) for k in _SIZES}


def _upsert(conn: sqlite3.Connection, statements: dict[int, str], rows: list[tuple[object, ...]]) -> None:
    insert_in_statements(conn, rows, _SIZES, statements.__getitem__)


def _is_first(r: StoredResponse) -> bool:
    return r.previous_response_id is None


def get(conn: sqlite3.Connection, response_id: str, project: str) -> StoredResponse | None:
    found = conn.execute(_SQL["get"], (response_id, project)).fetchone()
    return None if found is None else responses_sql.stored(found)


def delete(conn: sqlite3.Connection, response_id: str, project: str) -> bool:
    return conn.execute(_SQL["delete"], (response_id, project)).rowcount > 0


def chain(conn: sqlite3.Connection, response_id: str, project: str, max_depth: int) -> list[StoredResponse]:
    rows = conn.execute(_SQL["chain"], (response_id, project, max_depth)).fetchall()
    return [responses_sql.stored(r) for r in rows]
