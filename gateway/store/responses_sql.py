"""The SQL of the `responses` table, for both stores (sqlite_responses.py and postgres_responses.py run it): the
same statements, with SQLite's `?1` or PostgreSQL's `$1` for the numbered parameters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.ids import id_floor
from gateway.store.base import StoredResponse

RESPONSE_ID_PREFIX = "resp_"  # the Responses API's ids: resp_ and the record's id (gateway/api/responses.py)

COLUMNS = ("id", "project", "ts", "previous_response_id", "response", "input_items")
_LISTED = ", ".join(COLUMNS)
FIRST_COLUMNS = tuple(c for c in COLUMNS if c != "previous_response_id")


def statements(mark: str) -> dict[str, str]:
    """upsert, get, delete and chain, with `mark` ("?" or "$") before each parameter's number."""
    return {
        "upsert": upsert_rows(mark, COLUMNS, 1),
        # A first turn's (no previous_response_id): the column left to its default, NULL, which SQLite's driver
        # would otherwise bind through its adapter lookup (an AttributeError raised and cleared, ~3,000
        # instructions a row on the store's thread). `excluded.previous_response_id` is NULL all the same.
        "upsert_first": upsert_rows(mark, FIRST_COLUMNS, 1),
        "get": f"SELECT {_LISTED} FROM responses WHERE id = {mark}1 AND project = {mark}2",
        "delete": f"DELETE FROM responses WHERE id = {mark}1 AND project = {mark}2",
        # From the response back along previous_response_id, within the project, max_depth links at most (which
        # also ends a cycle, should rows ever make one); the oldest first.
        "chain": f"WITH RECURSIVE chain ({_LISTED}, depth) AS ("
        f" SELECT {_LISTED}, 1 FROM responses WHERE id = {mark}1 AND project = {mark}2"
        f" UNION ALL SELECT {', '.join(f'r.{c}' for c in COLUMNS)}, c.depth + 1"
        " FROM chain c JOIN responses r ON r.id = c.previous_response_id"
        f" WHERE r.project = {mark}2 AND c.depth < {mark}3"
        f") SELECT {_LISTED} FROM chain ORDER BY depth DESC",
    }


def upsert_rows(mark: str, columns: tuple[str, ...], rows: int) -> str:
    """The upsert of `rows` rows of `columns` in one statement, their parameters one row after the other (rows in
    the order given: an id twice in them keeps the later)."""
    width = len(columns)
    values = ", ".join(
        "(" + ", ".join(f"{mark}{r * width + i}" for i in range(1, width + 1)) + ")" for r in range(rows)
    )
    updated = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
    # An id is the gateway's and unpredictable: another project's row under it is never replaced.
    return (
        f"INSERT INTO responses ({', '.join(columns)}) VALUES {values} ON CONFLICT (id) DO UPDATE SET {updated}"
        " WHERE responses.project = excluded.project"
    )


def retention(mark: str) -> str:
    """The deletion of the responses made before a time: ids below `{mark}1` (`retention_bound`), a range of the
    primary key's index (an id is resp_ and a UUIDv7, its time first), with no index on ts to keep up to date at
    every write; `ts < {mark}2` as well, so that a row whose id is not the gateway's is never removed early."""
    return f"DELETE FROM responses WHERE id < {mark}1 AND ts < {mark}2"


def retention_bound(cutoff_s: float) -> str:
    """The id below which every stored response was made before cutoff_s."""
    return RESPONSE_ID_PREFIX + id_floor(cutoff_s)


def row(r: StoredResponse) -> tuple[Any, ...]:
    """The row of a response, its objects as JSON text."""
    return (
        r.id, r.project, float(r.created_at), r.previous_response_id, r.response_json.decode(), r.input_json.decode(),
    )  # fmt: skip


def first_rows(responses: Iterable[StoredResponse]) -> list[tuple[Any, ...]]:
    """The rows of responses with no previous_response_id, for the `upsert_first` statement (built inline: a call
    per row less on the store's thread)."""
    return [(r.id, r.project, float(r.created_at), r.response_json.decode(), r.input_json.decode()) for r in responses]


def stored(values: Sequence[Any]) -> StoredResponse:
    """A row read back (its JSON columns as text in both stores: SQLite's TEXT, PostgreSQL's json)."""
    id_, project, ts, previous, response, input_items = values
    return StoredResponse(id_, project, ts, previous, _utf8(response), _utf8(input_items))


def _utf8(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text
