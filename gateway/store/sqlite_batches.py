"""Rows written to SQLite in statements of many rows, for the writers of request records (sqlite.py) and of stored
responses (sqlite_responses.py).

executemany steps a statement per row, each step letting the GIL go and taking it back (a wait for the event loop
when it holds the GIL, on a busy gateway) and running the statement's program from its start. A run of rows goes
instead in as few statements of the given sizes as make it up, the largest first, in the run's order."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any


def insert_in_statements(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], sizes: Sequence[int], sql_for: Callable[[int], str]
) -> None:
    """`rows` in their order, by statements of `sizes` rows (largest first, ending with 1): `sql_for(size)` is the
    statement for that many rows, their parameters one row after the other."""
    start, left = 0, len(rows)
    for size in sizes:
        if left < size:
            continue
        sql = sql_for(size)
        while left >= size:
            conn.execute(sql, tuple(itertools.chain.from_iterable(rows[start : start + size])))
            start += size
            left -= size
