"""The embedded store: SQLite in WAL mode, written in batches from one thread so the event loop never blocks.

`telemetry.store: sqlite:///gateway.db` is a path relative to the working directory; `sqlite:////var/lib/x.db` is
absolute.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter
from typing import Any, TypeVar

import orjson

from gateway.config.telemetry import FlagValue
from gateway.store import (
    responses_sql,
    rollups,
    similarity_sql,
    sqlite_flags,
    sqlite_keys,
    sqlite_policies,
    sqlite_responses,
)
from gateway.store.base import (
    JSON_COLUMNS,
    RECORD_COLUMNS,
    PolicyVersion,
    Record,
    RecordsRefused,
    Row,
    StoredResponse,
    StoreStalled,
    StoreUnavailable,
    Unsure,
    write_setting_aside_refused,
)
from gateway.store.migrate import migrations as migrations, sqlite_migrate, sqlite_status, warn_if_ahead
from gateway.store.records import FLAG, MAP, REAL_OR_NULL, RECORD_FIELDS, json_bytes
from gateway.store.rows import FlagOverride, VirtualKey
from gateway.store.sqlite_batches import insert_in_statements
from gateway.store.traces import TraceQueries

T = TypeVar("T")

RETENTION_TABLES = frozenset({"model_cost_logs", "event_logs", "prompt_similarity_logs", "responses"})
_COLUMNS = ", ".join(RECORD_COLUMNS)
_INSERT = f"INSERT INTO model_cost_logs ({_COLUMNS}) VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
# For a batch that may be in the table already (see SQLiteStore._write): only the rows it does not hold, by ts and id.
_INSERT_NEW = (
    f"INSERT INTO model_cost_logs ({_COLUMNS}) SELECT {', '.join('?' for _ in RECORD_COLUMNS)}"
    " WHERE NOT EXISTS (SELECT 1 FROM model_cost_logs WHERE ts = ? AND id = ?)"
)
_ROLLUP_UPSERT = rollups.upsert_sql("sqlite")
_EVENT_INSERT = "INSERT INTO event_logs (id, ts, type, attrs) VALUES (?, ?, ?, ?)"
_EVENT_INSERT_NEW = (
    "INSERT INTO event_logs (id, ts, type, attrs) SELECT ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM event_logs WHERE ts = ? AND id = ?)"
)


class SQLiteStore(TraceQueries):
    name = "store"
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        # One thread owns the connection: sqlite3 objects must stay on the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        # The last write handed to the thread. A write the outbox gave up waiting for (a locked database) goes on
        # there and may still commit: until it is done no other write is queued behind it, and the next one (the
        # same batch, from the spool) skips the rows the table holds already, as the first one after opening does
        # (a batch a process wrote, and was killed before it could say so).
        self._writing: Future[None] | None = None
        self._unsure = {"model_cost_logs": Unsure(), "event_logs": Unsure()}
        self._by_shape: _RowShapes | None = None  # made at open, from the table's defaults

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Several workers share one file: wait for another's write instead of failing.
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._migrate_up(conn)
        self._by_shape = _RowShapes(conn)

    def _migrate_up(self, conn: sqlite3.Connection) -> None:
        sqlite_migrate(conn, "up")
        warn_if_ahead(sqlite_status(conn), f"sqlite {self.path}")

    async def migrate_down(self, to_version: int = 0) -> None:
        await self._call(lambda: sqlite_migrate(self._require(), "down", to_version))

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("store is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._call(lambda: self._require().execute("SELECT 1").fetchone())

    async def write(self, records: Sequence[Record]) -> None:
        """One transaction per batch; the records it refuses are set aside (RecordsRefused) after the others."""
        await self._write("model_cost_logs", records, _row, _INSERT, _INSERT_NEW)

    async def write_events(self, events: Sequence[Record]) -> None:
        await self._write("event_logs", events, _event_row, _EVENT_INSERT, _EVENT_INSERT_NEW)

    async def _write(
        self, table: str, records: Sequence[Record], make_row: Callable[[Record], Row], insert: str, insert_new: str
    ) -> None:
        counted = table == "model_cost_logs"  # the usage rollups count the records in the same transaction

        def run(batch: list[Row], unsure: bool) -> None:
            conn = self._require()
            conn.execute("BEGIN")
            try:
                if unsure:  # ts and id (the first two columns) bound again for the check; the rows inserted kept
                    batch = [row for row in batch if conn.execute(insert_new, (*row, row[1], row[0])).rowcount]
                elif counted and self._by_shape is not None:
                    self._by_shape.insert(conn, batch)
                else:
                    conn.executemany(insert, batch)
                if counted:
                    conn.executemany(_ROLLUP_UPSERT, rollups.summed(batch))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        async def write(batch: list[Row]) -> None:
            writing = self._writing
            if writing is not None and not writing.done():
                raise StoreStalled(f"sqlite {self.path}: an earlier write is still waiting for the database")
            self._writing = future = self._executor.submit(run, batch, unsure)
            try:
                await asyncio.wrap_future(future)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc

        unsure = self._unsure[table].about(records)
        try:
            await write_setting_aside_refused(records, make_row, write, _unavailable, f"sqlite {self.path}")
        except RecordsRefused:
            self._unsure[table].written(records)  # the others are written, the refused ones set aside
            raise
        except BaseException:  # cancelled too (a write that took too long): it may commit all the same
            self._unsure[table].failed(records)
            raise
        self._unsure[table].written(records)

    async def events(self, *, limit: int = 100) -> list[Record]:
        def query() -> list[Record]:
            rows = (
                self._require()
                .execute("SELECT id, ts, type, attrs FROM event_logs ORDER BY ts DESC LIMIT ?", (limit,))
                .fetchall()
            )
            return [{"id": i, "ts": ts, "type": t, "attrs": orjson.loads(a)} for i, ts, t, a in rows]

        return await self._call(query)

    async def recent(self, *, limit: int = 100, project: str | None = None) -> list[Record]:
        def query() -> list[Record]:
            conn = self._require()
            sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM model_cost_logs"
            args: list[Any] = []
            if project is not None:
                sql += " WHERE project = ?"
                args.append(project)
            sql += " ORDER BY ts DESC LIMIT ?"
            args.append(limit)
            rows = conn.execute(sql, args).fetchall()
            return [
                {c: orjson.loads(v) if c in JSON_COLUMNS else v for c, v in zip(RECORD_COLUMNS, row, strict=True)}
                for row in rows
            ]

        return await self._call(query)

    async def retention(self, table: str, max_age_s: float) -> int:
        """Delete the rows of a table of RETENTION_TABLES older than max_age_s; the number deleted."""
        if table not in RETENTION_TABLES:
            raise ValueError(f"no retention for table {table!r}: one of {sorted(RETENTION_TABLES)}")
        cutoff = time.time() - max_age_s

        def delete() -> int:
            conn = self._require()
            if table == "responses":  # by the primary key's index: the table has none on ts
                bound = responses_sql.retention_bound(cutoff)
                return int(conn.execute(responses_sql.retention("?"), (bound, cutoff)).rowcount)
            removed = conn.execute(f"DELETE FROM {table} WHERE ts < ?", (cutoff,)).rowcount
            if table == "model_cost_logs":  # the rollups go with their records: a period once all of it is past
                conn.execute(rollups.RETENTION_SQL, (cutoff,))
            return removed

        return await self._call(delete)

    # Virtual keys (gateway/store/sqlite_keys.py holds the SQL).
    async def create_key(self, key: VirtualKey) -> None:
        await self._call(lambda: sqlite_keys.create(self._require(), key))

    async def key_by_hash(self, key_hash: str) -> VirtualKey | None:
        return await self._call(lambda: sqlite_keys.by_hash(self._require(), key_hash))

    async def get_key(self, key_id: str) -> VirtualKey | None:
        return await self._call(lambda: sqlite_keys.by_id(self._require(), key_id))

    async def list_keys(self, *, project: str | None = None) -> list[VirtualKey]:
        return await self._call(lambda: sqlite_keys.listing(self._require(), project))

    async def revoke_key(self, key_id: str, *, at: float) -> VirtualKey | None:
        return await self._call(lambda: sqlite_keys.revoke(self._require(), key_id, at))

    async def rotate_key(self, key_id: str, new: VirtualKey, *, revoke_at: float) -> VirtualKey | None:
        return await self._call(lambda: sqlite_keys.rotate(self._require(), key_id, new, revoke_at))

    async def update_key(self, key: VirtualKey, *, now: float) -> VirtualKey | None:
        return await self._call(lambda: sqlite_keys.update(self._require(), key, now))

    # Policies created through the API (gateway/store/sqlite_policies.py holds the SQL).
    async def save_policy(
        self, name: str, source: str, *, author: str, expected_version: int | None = None
    ) -> PolicyVersion:
        return await self._call(lambda: sqlite_policies.save(self._require(), name, source, author, expected_version))

    async def delete_policy(self, name: str, *, author: str) -> PolicyVersion | None:
        return await self._call(lambda: sqlite_policies.delete(self._require(), name, author))

    async def live_policies(self) -> list[PolicyVersion]:
        return await self._call(lambda: sqlite_policies.live(self._require()))

    async def policy_history(self, name: str) -> list[PolicyVersion]:
        return await self._call(lambda: sqlite_policies.history(self._require(), name))

    async def policies_revision(self) -> int:
        return await self._call(lambda: sqlite_policies.revision(self._require()))

    # Feature flags set through the API (gateway/flags.py; gateway/store/sqlite_flags.py).
    async def feature_flags(self) -> list[FlagOverride]:
        return await self._call(lambda: sqlite_flags.overrides(self._require()))

    async def set_feature_flag(self, project: str, flag: str, value: FlagValue | None, *, author: str) -> None:
        await self._call(lambda: sqlite_flags.set_value(self._require(), project, flag, value, author))

    async def feature_flags_revision(self) -> int:
        return await self._call(lambda: sqlite_flags.revision(self._require()))

    # Stored responses of the Responses API (gateway/conversations.py; gateway/store/sqlite_responses.py).
    async def save_responses(self, responses: Sequence[StoredResponse]) -> None:
        await self._call(lambda: sqlite_responses.save(self._require(), responses))

    async def get_response(self, response_id: str, *, project: str) -> StoredResponse | None:
        return await self._call(lambda: sqlite_responses.get(self._require(), response_id, project))

    async def delete_response(self, response_id: str, *, project: str) -> bool:
        return await self._call(lambda: sqlite_responses.delete(self._require(), response_id, project))

    async def response_chain(self, response_id: str, *, project: str, max_depth: int = 1000) -> list[StoredResponse]:
        return await self._call(lambda: sqlite_responses.chain(self._require(), response_id, project, max_depth))

    # Prompt similarity (gateway/similarity/worker.py; gateway/store/similarity_sql.py holds the SQL).
    async def write_similarity(self, rows: Sequence[Record]) -> None:
        if not rows:
            return
        values = [similarity_sql.sqlite_row(r) for r in rows]

        def insert() -> None:
            conn = self._require()
            conn.execute("BEGIN")
            try:
                conn.executemany(similarity_sql.SQLITE_INSERT, values)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._call(insert)

    async def similarity_stats(self, project: str | None, since: float) -> dict[str, float]:
        """Requests compared since `since` (of one project, or all), their duplicates, and the hit rates an exact
        and a semantic cache would have had."""
        sql, args = similarity_sql.stats_query(project, since, "?")
        row = await self._call(lambda: self._require().execute(sql, args).fetchone())
        return similarity_sql.stats(row)

    # -- trace queries (gateway/store/traces.py: the methods; this store runs their SQL) ---------------

    async def _named(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        def query() -> list[dict[str, Any]]:
            cursor = self._require().execute(sql, args)
            names = [d[0] for d in cursor.description]
            json = [name in JSON_COLUMNS for name in names]  # text in SQLite
            return [
                {n: orjson.loads(v) if j and v is not None else v for n, j, v in zip(names, json, row, strict=True)}
                for row in cursor.fetchall()
            ]

        return await self._call(query)


class _RowShapes:
    """The records' INSERTs without the columns whose value is the column's default, which SQLite fills in as it
    would have stored the value bound: a record's row holds the same values, and binding is a third of a row's
    write (each text bound is copied into memory sqlite3 allocates for it, each None looked up as an adapter and
    an AttributeError raised and cleared inside the driver). Most records leave a dozen columns empty ('', '[]',
    '{}', NULL): a hit's, and a miss's nearly as many. A batch is written in runs of consecutive rows of one shape
    (the columns left out), in the batch's order; the statements of the shapes met are cached by sqlite3.

    A run is written in statements of many rows, not by executemany, which steps a statement per row (letting the
    GIL go and taking it back each time, and running the statement's program from its start): 64 rows to a
    statement, the rest in 16s, 4s and 1s. Only the first _MULTI_SHAPES shapes met get those statements, so that
    theirs (three sizes each, made when first needed) and the responses' fourteen stay in sqlite3's cache of 128
    a connection; the others run by executemany, as all did before."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        omissible: dict[int, str | None] = {}  # position in RECORD_COLUMNS -> the column's default
        for _, name, _, _, default, _ in conn.execute("PRAGMA table_info(model_cost_logs)"):
            if name not in _OMISSIBLE:
                continue
            if default is None and RECORD_FIELDS[name] is REAL_OR_NULL:
                omissible[RECORD_COLUMNS.index(name)] = None
            elif default in ("''", "'[]'", "'{}'"):
                omissible[RECORD_COLUMNS.index(name)] = default[1:-1]
        self._omissible = tuple(omissible)
        tests = [f"row[{i}] is None" if d is None else f"row[{i}] == {d!r}" for i, d in omissible.items()]
        scope: dict[str, Any] = {}
        exec(f"def shape(row):\n    return ({', '.join(tests)}{',' if tests else ''})", scope)  # from the schema
        self._shape: Callable[[Row], tuple[bool, ...]] = scope["shape"]
        self._shapes: dict[tuple[bool, ...], _Shape] = {}
        self._multi = 0  # shapes given statements of many rows since the map was last emptied
        # A statement's parameters within the connection's limit (999 before SQLite 3.32, 32766 since, or as built).
        self._max_params = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def _statement(self, shape: tuple[bool, ...]) -> _Shape:
        left_out = {i for i, out in zip(self._omissible, shape, strict=True) if out}
        kept = [i for i in range(len(RECORD_COLUMNS)) if i not in left_out]
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.clear()
            self._multi = 0
        sizes: tuple[int, ...] = (1,)
        if self._multi < _MULTI_SHAPES:
            self._multi += 1
            sizes = tuple(k for k in _SIZES if k * len(kept) <= self._max_params)
        made = self._shapes[shape] = _Shape(kept, sizes)
        return made

    def runs(self, batch: Sequence[Row]) -> Iterator[tuple[_Shape, list[Row]]]:
        shape_of, shapes = self._shape, self._shapes
        current: tuple[bool, ...] | None = None
        made: _Shape | None = None
        pick = _PICK_NONE
        run: list[Row] = []
        for row in batch:
            shape = shape_of(row)
            if shape != current:
                if made is not None:
                    yield made, run
                made = shapes.get(shape) or self._statement(shape)
                current, pick, run = shape, made.pick, []
            run.append(pick(row))
        if made is not None:
            yield made, run

    def insert(self, conn: sqlite3.Connection, batch: Sequence[Row]) -> None:
        """The batch's rows, in its order."""
        for shape, rows in self.runs(batch):
            if len(shape.sizes) == 1:
                conn.executemany(shape.sql(1), rows)
                continue
            insert_in_statements(conn, rows, shape.sizes, shape.sql)


class _Shape:
    """A shape's columns kept, their picker, and its INSERTs by number of rows (made when first needed)."""

    __slots__ = ("_head", "_one", "_statements", "pick", "sizes")

    def __init__(self, kept: list[int], sizes: tuple[int, ...]) -> None:
        self.pick: Callable[[Row], Row] = itemgetter(*kept)  # id and ts are always kept: a tuple
        self.sizes = sizes
        self._head = f"INSERT INTO model_cost_logs ({', '.join(RECORD_COLUMNS[i] for i in kept)}) VALUES "
        self._one = f"({', '.join('?' for _ in kept)})"
        self._statements: dict[int, str] = {}

    def sql(self, size: int) -> str:
        made = self._statements.get(size)
        if made is None:
            made = self._statements[size] = self._head + ", ".join([self._one] * size)
        return made


_MAX_SHAPES = 256
_MULTI_SHAPES = 16  # 48 statements of many rows at most
_SIZES = (64, 16, 4, 1)
_PICK_NONE: Callable[[Row], Row] = itemgetter(0, 0)  # never called: a run starts with its shape's statement
# The columns a record most often leaves at their default: a column tested per row costs about a quarter of what
# leaving it out saves; those seldom empty (the key's name, the project, the models, the trace id) are not tested.
_OMISSIBLE = frozenset(
    {
        "key_id", "team", "user_id", "provider", "deployment", "error_type", "error_domain", "ttfb_ms", "ttft_ms",
        "cost_usd", "tags", "route_reason", "guardrails", "parent_span_id", "content_input", "content_output",
        "metadata", "client_request_id", "cache", "cache_source_id", "saved_usd",
    }
)  # fmt: skip


def _unavailable(exc: BaseException) -> bool:
    """Whether a failed write says the database cannot be written (locked, read-only, disk full or failing,
    damaged) rather than that it refuses a row: anything else (a constraint, a value it cannot bind, whatever the
    driver or a conversion raised) is put down to the batch's rows, which are then tried apart."""
    if isinstance(exc, sqlite3.DatabaseError):
        return isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or type(exc) is sqlite3.DatabaseError
    return isinstance(exc, StoreUnavailable | OSError | MemoryError)


def _json(value: Any) -> str:
    return json_bytes(value).decode()  # never refused: what JSON cannot hold is kept as text


def _compile_row() -> Callable[[Record], Row]:
    """_row, written out column by column (as records.typed is): a tuple display instead of a generator over the
    columns, a third of the cost per record."""

    def value(c: str) -> str:
        if RECORD_FIELDS[c] is FLAG:
            # As 1 or 0, what SQLite stores for a bool anyway: sqlite3 binds an int at once, where a bool (not an int
            # to its fast path) looks for an adapter and raises and clears an AttributeError, ~3,300 instructions.
            return f"(1 if record[{c!r}] else 0)"
        if c not in JSON_COLUMNS:
            return f"record[{c!r}]"
        # Most records' tags, metadata and guardrails are empty: their JSON without a call (an empty tuple is not
        # equal to [], and goes through _json as before).
        empty = "{}" if RECORD_FIELDS[c] is MAP else "[]"
        return f"({empty!r} if record[{c!r}] == {empty} else _json(record[{c!r}]))"

    values = ", ".join(value(c) for c in RECORD_COLUMNS)
    scope: dict[str, Any] = {"_json": _json}
    exec(f"def _row(record, _json=_json):\n    return ({values},)", scope)  # code made from the schema, never input
    row: Callable[[Record], Row] = scope["_row"]
    row.__doc__ = """A record's row, its columns in RECORD_COLUMNS' order, JSON columns as JSON text. Typed when
    built (gateway/store/records.py); what an older process spooled untyped and the database refuses is set aside
    by _write."""
    return row


_row = _compile_row()


def _event_row(event: Record) -> Row:
    return (str(event["id"]), float(event["ts"]), str(event["type"]), _json(event["attrs"]))
