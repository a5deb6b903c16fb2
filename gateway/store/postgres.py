"""The PostgreSQL store: asyncpg, a small pool, and one COPY per batch.

`telemetry.store: postgresql://user:password@host:5432/db` (or `postgres://`; `?schema=name` keeps the tables in a
schema of their own, created if need be). The store connects at open and applies pending migrations
(gateway/store/migrations/postgres, by gateway/store/migrate.py as `gateway migrate up` does) under the schema's
advisory lock, so that gateways starting together never race. A store that cannot connect at open tries again on
its next call, and a connection the server closed (a restart, a failover, pg_terminate_backend) is dropped and the
call tried again on another. Every failure comes out as StoreUnavailable.

model_cost_logs is range-partitioned by UTC day on `ts`: open() and ensure_partitions() create the days ahead, and
retention() drops whole days. Rows no day holds yet go to the DEFAULT partition, so a missing day never fails a
write; ensure_partitions() moves them into their day when it creates it.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import operator
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import orjson

from gateway.config.telemetry import STORE_SCHEMA, FlagValue
from gateway.store import (
    postgres_flags,
    postgres_keys,
    postgres_policies,
    postgres_responses,
    responses_sql,
    rollups,
    similarity_sql,
)
from gateway.store.base import (
    RECORD_COLUMNS,
    PolicyVersion,
    Record,
    RecordsRefused,
    Row,
    StoredResponse,
    StoreUnavailable,
    Unsure,
    write_setting_aside_refused,
)
from gateway.store.migrate import LOCK_KEY, pg_migrate, pg_status, warn_if_ahead
from gateway.store.records import json_bytes
from gateway.store.rows import FlagOverride, VirtualKey
from gateway.store.sqlite import RETENTION_TABLES
from gateway.store.traces import TraceQueries

T = TypeVar("T")
logger = logging.getLogger("gateway.store")

_DAY = 86_400
_ROLLUP_UPSERT = rollups.upsert_sql("postgres")
_EVENT_COLUMNS = ("id", "ts", "type", "attrs")
_PARTITION = re.compile(r"model_cost_logs_p(\d{8})")
_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'model_cost_logs'::regclass"
)
# One lock per schema for schema changes: migrations, partitions created or dropped.
_LOCK = f"SELECT pg_advisory_xact_lock({LOCK_KEY})"
# The server closed the connection. InternalClientError: the server's goodbye arrived and was read, but the socket's
# end was not yet, so the connection still looks open and refuses the next query with "another operation in progress".
_LOST = (
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
)
# The server's error classes that a row's values cause: data exceptions (a value out of range, bad text),
# integrity constraints (NOT NULL), program limits (an index row too big).
_ROW_CLASSES = frozenset({"22", "23", "54"})
_FAILED = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


class PostgresStore(TraceQueries):
    """Store, KeyStore, PolicyStore and ResponseStore on PostgreSQL. `schema`: a schema of its own (created at open,
    and made the search path); None keeps the DSN's search path (usually `public`)."""

    name = "store"
    dialect = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        max_size: int = 4,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 60.0,
        ping_timeout_s: float = 2.0,
        query_timeout_s: float = 5.0,
        application_name: str = "gateway",  # `gateway migrate down` looks for it (schema.GATEWAY_APPLICATION)
    ) -> None:
        url = urlsplit(dsn)
        query = parse_qsl(url.query, keep_blank_values=True)
        if any(k == "schema" for k, _ in query):  # ?schema=name: ours, not a server setting for asyncpg to pass on
            schema = schema or [v for k, v in query if k == "schema"][-1]
            dsn = urlunsplit(url._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
        if schema is not None and not STORE_SCHEMA.fullmatch(schema):
            raise ValueError(f"schema {schema!r}: lower-case letters, digits and _ only")
        self.dsn = dsn
        self.schema = schema
        self.max_size = max_size
        # Per table, the rows that may be in it already (see write).
        self._unsure = {"model_cost_logs": Unsure(), "event_logs": Unsure()}
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self.query_timeout_s = query_timeout_s
        self.application_name = application_name
        # For messages: never the password.
        self.where = f"{url.hostname or 'localhost'}:{url.port or 5432}{url.path}" + (f" ({schema})" if schema else "")
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    # -- connection -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._closed = False
        await self._ready()

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, *_FAILED):
                pool.terminate()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self.ping_timeout_s):
                await self._run(lambda conn: conn.fetchval("SELECT 1"))
        except TimeoutError as exc:
            raise StoreUnavailable(f"postgres {self.where}: no answer within {self.ping_timeout_s}s") from exc

    async def _ready(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise StoreUnavailable(f"postgres {self.where}: the store is closed")
        async with self._opening:
            if self._pool is None:
                self._pool = await self._connect()
        return self._pool

    async def _connect(self) -> Any:
        settings = {"application_name": self.application_name}  # as pg_stat_activity shows the connections
        if self.schema:
            settings["search_path"] = self.schema
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.max_size,
                timeout=self.connect_timeout_s,
                command_timeout=self.command_timeout_s,
                server_settings=settings,
                init=_init_connection,
            )
        except _FAILED as exc:
            raise StoreUnavailable(f"postgres {self.where}: cannot connect: {_describe(exc)}") from exc
        ready = False
        try:
            async with pool.acquire() as conn:
                await self._migrate_up(conn)
                try:
                    await _ensure_partitions(conn, self.schema, 2, time.time())
                except asyncpg.PostgresError as exc:  # rows go to the default partition meanwhile
                    logger.warning("postgres %s: day partitions not created: %s", self.where, _describe(exc))
            ready = True
        except _FAILED as exc:
            raise StoreUnavailable(f"postgres {self.where}: cannot migrate: {_describe(exc)}") from exc
        finally:
            if not ready:
                pool.terminate()
        return pool

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, bounded: bool = True) -> T:
        """fn on a pooled connection. A connection the server had closed is dropped and the call tried on another
        (after a restart every idle connection in the pool is dead: at most max_size of them). A bounded call (all
        but maintenance) that has no answer within query_timeout_s, waiting for a connection included, has failed:
        a hung server fails the key lookup, the query or the poll that waits on it, it does not hold them."""
        pool = await self._ready()  # not bounded: the first connection applies migrations, which may take long
        limit = self.query_timeout_s if bounded else None
        try:
            async with asyncio.timeout(limit):
                return await self._call(pool, fn)
        except TimeoutError:
            raise StoreUnavailable(f"postgres {self.where}: no answer within {limit:g} s") from None

    async def _call(self, pool: Any, fn: Callable[[Any], Awaitable[T]]) -> T:
        attempt = 0
        try:
            while True:
                async with pool.acquire() as conn:
                    try:
                        return await fn(conn)
                    except asyncio.CancelledError:
                        # The caller gave up (a write past telemetry.write_timeout_s, a hung server): the
                        # connection is mid-command, and returning it to the pool would wait for the server to
                        # cancel that command, as long as the server hangs. Closed here, the pool makes another.
                        conn.terminate()
                        raise
                    except _LOST as exc:
                        with contextlib.suppress(asyncpg.InterfaceError):  # the pool may have dropped it already
                            conn.terminate()
                        attempt += 1
                        if attempt > self.max_size:
                            raise
                        logger.info("postgres %s: connection lost (%s), trying a new one", self.where, _describe(exc))
        except _FAILED as exc:
            raise StoreUnavailable(f"postgres {self.where}: {_describe(exc)}") from exc

    # -- migrations -------------------------------------------------------------------------------------------

    async def _migrate_up(self, conn: Any) -> None:
        await pg_migrate(conn, self.schema, "up")  # gateway/store/migrate.py, as `gateway migrate up` does
        warn_if_ahead(await pg_status(conn), f"postgres {self.where}")

    async def migrate_down(self, to_version: int = 0) -> None:
        await self._run(lambda conn: pg_migrate(conn, self.schema, "down", to_version), bounded=False)

    # -- records and events -----------------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        """One COPY per batch; the records the server refuses are set aside (RecordsRefused) after the others.

        A write that failed or was cancelled midway (its connection lost, the outbox tired of waiting) may have been
        committed all the same, and the outbox will send its rows again: a batch holding any of them, and the first
        write after opening (a batch the previous process may have written before it stopped), goes through a
        staging table and only the rows not in the table already are inserted (Unsure). Otherwise, a plain COPY."""
        await self._write("model_cost_logs", RECORD_COLUMNS, records, _row)

    async def write_events(self, events: Sequence[Record]) -> None:
        await self._write("event_logs", _EVENT_COLUMNS, events, _event_row)

    async def _write(
        self, table: str, columns: Sequence[str], records: Sequence[Record], make_row: Callable[[Record], Row]
    ) -> None:
        if not records:
            return

        counted = table == "model_cost_logs"  # the usage rollups count the records in the same transaction

        async def write(rows: list[Row]) -> None:
            attempts = 0
            sums = await rollups.summed_async(rows) if counted and not unsure else []

            async def copy(conn: Any) -> None:
                nonlocal attempts, sums
                attempts += 1
                async with conn.transaction():
                    if unsure or attempts > 1:  # a retry of _run after a lost connection is unsure too
                        new = await _copy_new_rows(conn, table, columns, rows)
                        if counted:
                            sums = await rollups.summed_async([row for row in rows if row[0] in new])
                    else:
                        await conn.copy_records_to_table(table, records=rows, columns=columns)
                    if sums:
                        await conn.executemany(_ROLLUP_UPSERT, sums)

            await self._run(copy)

        unsure = self._unsure[table].about(records)
        try:
            await write_setting_aside_refused(records, make_row, write, _unavailable, f"postgres {self.where}")
        except RecordsRefused:
            self._unsure[table].written(records)  # the others are written, the refused ones set aside
            raise
        except BaseException:  # cancelled too (a shutdown's deadline, a write too slow): it may have committed
            self._unsure[table].failed(records)
            raise
        self._unsure[table].written(records)

    async def events(self, *, limit: int = 100) -> list[Record]:
        sql = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM event_logs ORDER BY ts DESC LIMIT $1"
        rows = await self._run(lambda conn: conn.fetch(sql, limit))
        return [dict(row.items()) for row in rows]

    async def recent(self, *, limit: int = 100, project: str | None = None) -> list[Record]:
        sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM model_cost_logs"
        args: list[Any] = []
        if project is not None:
            sql += " WHERE project = $1"
            args.append(project)
        sql += f" ORDER BY ts DESC LIMIT ${len(args) + 1}"
        args.append(limit)
        rows = await self._run(lambda conn: conn.fetch(sql, *args))
        return [dict(row.items()) for row in rows]

    # -- partitions and retention -----------------------------------------------------------------------------

    async def ensure_partitions(self, days_ahead: int = 2, *, now: float | None = None) -> list[str]:
        """Create the day partitions of model_cost_logs from yesterday to `days_ahead` days on (UTC), moving rows
        the default partition holds for those days; the names created. Run at open and then daily."""
        at = time.time() if now is None else now
        return await self._run(lambda conn: _ensure_partitions(conn, self.schema, days_ahead, at), bounded=False)

    async def retention(self, table: str, max_age_s: float, *, now: float | None = None) -> int:
        """Remove the rows of a table of RETENTION_TABLES older than max_age_s; the number removed. Whole days of
        model_cost_logs are dropped, then older rows left in the rest deleted."""
        if table not in RETENTION_TABLES:
            raise ValueError(f"no retention for table {table!r}: one of {sorted(RETENTION_TABLES)}")
        cutoff = (time.time() if now is None else now) - max_age_s

        async def remove(conn: Any) -> int:
            removed = 0
            if table == "model_cost_logs":
                old = [name for name, day in await _partitions(conn) if (day + 1) * _DAY <= cutoff]
                for name in old:  # counted before the drops: each holds a lock on the table that stops writes
                    removed += await conn.fetchval(f"SELECT count(*) FROM {name}")
                if old:
                    async with conn.transaction():
                        await conn.execute(_LOCK, self.schema)
                        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(old)}")
            if table == "responses":  # by the primary key's index: the table has none on ts
                status = await conn.execute(responses_sql.retention("$"), responses_sql.retention_bound(cutoff), cutoff)
                return int(status.split()[-1])
            status = await conn.execute(f"DELETE FROM {table} WHERE ts < $1", cutoff)
            if table == "model_cost_logs":  # the rollups go with their records: a period once all of it is past
                await conn.execute(rollups.RETENTION_SQL.replace("?", "$1"), cutoff)
            return removed + int(status.split()[-1])

        return await self._run(remove, bounded=False)

    # -- virtual keys (gateway/store/postgres_keys.py holds the SQL) ------------------------------------------

    async def create_key(self, key: VirtualKey) -> None:
        await self._run(lambda conn: postgres_keys.create(conn, key))

    async def key_by_hash(self, key_hash: str) -> VirtualKey | None:
        return await self._run(lambda conn: postgres_keys.by_hash(conn, key_hash))

    async def get_key(self, key_id: str) -> VirtualKey | None:
        return await self._run(lambda conn: postgres_keys.by_id(conn, key_id))

    async def list_keys(self, *, project: str | None = None) -> list[VirtualKey]:
        return await self._run(lambda conn: postgres_keys.listing(conn, project))

    async def revoke_key(self, key_id: str, *, at: float) -> VirtualKey | None:
        return await self._run(lambda conn: postgres_keys.revoke(conn, key_id, at))

    async def rotate_key(self, key_id: str, new: VirtualKey, *, revoke_at: float) -> VirtualKey | None:
        return await self._run(lambda conn: postgres_keys.rotate(conn, key_id, new, revoke_at))

    async def update_key(self, key: VirtualKey, *, now: float) -> VirtualKey | None:
        return await self._run(lambda conn: postgres_keys.update(conn, key, now))

    # -- policies (gateway/store/postgres_policies.py holds the SQL) ------------------------------------------

    async def save_policy(
        self, name: str, source: str, *, author: str, expected_version: int | None = None
    ) -> PolicyVersion:
        return await self._run(lambda conn: postgres_policies.save(conn, name, source, author, expected_version))

    async def delete_policy(self, name: str, *, author: str) -> PolicyVersion | None:
        return await self._run(lambda conn: postgres_policies.delete(conn, name, author))

    async def live_policies(self) -> list[PolicyVersion]:
        return await self._run(postgres_policies.live)

    async def policy_history(self, name: str) -> list[PolicyVersion]:
        return await self._run(lambda conn: postgres_policies.history(conn, name))

    async def policies_revision(self) -> int:
        return await self._run(postgres_policies.revision)

    # -- feature flags set through the API (gateway/flags.py; gateway/store/postgres_flags.py) ----

    async def feature_flags(self) -> list[FlagOverride]:
        return await self._run(postgres_flags.overrides)

    async def set_feature_flag(self, project: str, flag: str, value: FlagValue | None, *, author: str) -> None:
        await self._run(lambda conn: postgres_flags.set_value(conn, project, flag, value, author))

    async def feature_flags_revision(self) -> int:
        return await self._run(postgres_flags.revision)

    # -- stored responses of the Responses API (gateway/conversations.py; gateway/store/postgres_responses.py) --

    async def save_responses(self, responses: Sequence[StoredResponse]) -> None:
        await self._run(lambda conn: postgres_responses.save(conn, responses))

    async def get_response(self, response_id: str, *, project: str) -> StoredResponse | None:
        return await self._run(lambda conn: postgres_responses.get(conn, response_id, project))

    async def delete_response(self, response_id: str, *, project: str) -> bool:
        return await self._run(lambda conn: postgres_responses.delete(conn, response_id, project))

    async def response_chain(self, response_id: str, *, project: str, max_depth: int = 1000) -> list[StoredResponse]:
        return await self._run(lambda conn: postgres_responses.chain(conn, response_id, project, max_depth))

    # -- prompt similarity (gateway/similarity/worker.py; gateway/store/similarity_sql.py holds the SQL) --

    async def write_similarity(self, rows: Sequence[Record]) -> None:
        """One COPY: the whole batch or nothing."""
        if not rows:
            return
        values = [similarity_sql.postgres_row(r) for r in rows]
        await self._run(
            lambda conn: conn.copy_records_to_table(
                "prompt_similarity_logs", records=values, columns=similarity_sql.SIMILARITY_COLUMNS
            )
        )

    async def similarity_stats(self, project: str | None, since: float) -> dict[str, float]:
        """Requests compared since `since` (of one project, or all), their duplicates, and the hit rates an exact
        and a semantic cache would have had."""
        sql, args = similarity_sql.stats_query(project, since, "$")
        row = await self._run(lambda conn: conn.fetchrow(sql, *args))
        return similarity_sql.stats(row)

    # -- trace queries (gateway/store/traces.py: the methods; this store runs their SQL) ---------------

    async def _named(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        rows = await self._run(lambda conn: conn.fetch(sql, *args))
        return [dict(row.items()) for row in rows]


async def _init_connection(conn: Any) -> None:
    # jsonb in binary: a version byte (1), then the JSON text.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=_jsonb,
        decoder=lambda data: orjson.loads(data[1:]),
    )


async def _copy_new_rows(conn: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> set[str]:
    """COPY into a staging table, then insert the rows the table does not hold yet (by ts and id, indexed); the ids
    inserted. Inside the caller's transaction."""
    listed = ", ".join(columns)
    # Per connection, emptied at each commit.
    await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming_{table} (LIKE {table}) ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table(f"incoming_{table}", records=rows, columns=columns)
    inserted = await conn.fetch(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM incoming_{table} i"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} m WHERE m.ts = i.ts AND m.id = i.id) RETURNING id"
    )
    return {row[0] for row in inserted}


def _unavailable(exc: BaseException) -> bool:
    """Whether a failed write says the server cannot be written (connection, resources, a shutdown, permissions,
    a missing table: every row would fail the same) rather than that it refuses a row: a data or constraint error
    from the server, or anything the driver or a conversion raised on the client's side (asyncpg's DataError for a
    value it cannot encode, OverflowError, UnicodeEncodeError...), is put down to the batch's rows."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] not in _ROW_CLASSES
    if isinstance(exc, ValueError):  # asyncpg's client-side DataError is an InterfaceError and a ValueError
        return False
    return isinstance(exc, StoreUnavailable | asyncpg.InterfaceError | asyncpg.InternalClientError | OSError)


_record_values = operator.itemgetter(*RECORD_COLUMNS)


def _row(record: Record) -> Row:
    row: Row = _record_values(record)  # typed when built (gateway/store/records.py)
    for value in row:
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL's text refuses NUL, which a client can put in a model name or a prompt: dropped.
            return tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row)
    return row


# jsonb refuses \u0000 too: an escaped NUL (not an escaped backslash followed by "u0000") is dropped.
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _event_row(event: Record) -> Row:
    return (str(event["id"]), float(event["ts"]), str(event["type"]), event["attrs"])


def _jsonb(value: Any) -> bytes:
    data = json_bytes(value)  # never refused: what JSON cannot hold is kept as text
    if b"\\u0000" in data:
        data = _JSON_NUL.sub(rb"\1", data)
    return b"\x01" + data


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _day_name(day: int) -> str:
    return "model_cost_logs_p" + time.strftime("%Y%m%d", time.gmtime(day * _DAY))


async def _partitions(conn: Any) -> list[tuple[str, int]]:
    """The day partitions of model_cost_logs: (name, UTC day number), oldest first."""
    found = []
    for row in await conn.fetch(_PARTITIONS):
        if match := _PARTITION.fullmatch(row[0]):
            found.append((row[0], calendar.timegm(time.strptime(match[1], "%Y%m%d")) // _DAY))
    return sorted(found, key=lambda item: item[1])


async def _ensure_partitions(conn: Any, schema: str | None, days_ahead: int, now: float) -> list[str]:
    today = int(now // _DAY)
    created = []
    async with conn.transaction():
        await conn.execute(_LOCK, schema)
        existing = {day for _, day in await _partitions(conn)}
        for day in range(today - 1, today + days_ahead + 1):
            if day in existing:
                continue
            name, low, high = _day_name(day), float(day * _DAY), float((day + 1) * _DAY)
            # Made apart, filled with the default partition's rows for the day, then attached: attaching checks
            # that the default partition holds none of the day's rows any more.
            await conn.execute(f"CREATE TABLE {name} (LIKE model_cost_logs INCLUDING DEFAULTS)")
            await conn.execute(
                f"WITH moved AS (DELETE FROM model_cost_logs_default WHERE ts >= {low!r} AND ts < {high!r}"
                f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            )
            bounds = f"FROM ({low!r}) TO ({high!r})"
            await conn.execute(f"ALTER TABLE model_cost_logs ATTACH PARTITION {name} FOR VALUES {bounds}")
            created.append(name)
    return created
