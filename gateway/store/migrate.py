"""Schema migrations: the one path that a store takes when it opens and `gateway migrate` takes on demand.

The migrations are gateway/store/migrations/<dialect>/NNNN_name.up.sql and NNNN_name.down.sql; the table
schema_migrations (version, name, applied_at) holds those applied. Each step, up or down, is one transaction that
runs the step's file and updates the table, so a failure leaves the schema at a version the table names, and the
steps before it stay done. Which step comes next is decided inside that transaction, from the table as it is
then: two migrators can never apply the same step twice, and a gateway that starts while a migration runs finds
the schema where that one left it.

On PostgreSQL a whole run holds one advisory lock per schema (the one partition changes and the stores' own
opening take): a second migrator, or a gateway starting, waits for it. SQLite's `BEGIN IMMEDIATE` does the same
per step.

A schema may hold migrations this code does not know: a newer gateway applied them. The stores serve on it all the
same (a rolling upgrade runs old replicas on the new schema for a while; see the README's "Upgrades") and log a
warning; `gateway store check` reports it, and `down` refuses to go below a step it has no file for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, NamedTuple

logger = logging.getLogger("gateway.store")

Dialect = Literal["sqlite", "postgres"]
Direction = Literal["up", "down"]


class Migration(NamedTuple):
    version: int
    name: str
    up: str
    down: str  # "" when the migration has no down file


_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.(up|down)\.sql")


def migrations(dialect: Dialect = "sqlite") -> list[Migration]:
    """The migrations this code knows, by version, from gateway/store/migrations/<dialect>/. A file there that is
    not NNNN_name.up.sql or .down.sql, a version twice, or a down without its up is a broken install (a file left
    by hand, a bad merge): ValueError naming it, rather than a step silently skipped or run under another's
    version."""
    folder = resources.files("gateway.store").joinpath("migrations", dialect)
    found: dict[int, Migration] = {}
    downs: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__" or entry.name.endswith(".py"):
            continue
        match = _FILE.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migrations/{dialect}/{entry.name}: not a migration (NNNN_name.up.sql or .down.sql)")
        version, name, direction = int(match[1]), match[2], match[3]
        if direction == "down":
            downs[f"{match[1]}_{name}"] = entry.name
            continue
        if version in found:
            raise ValueError(f"migrations/{dialect}: version {version:04d} twice ({found[version].name}, {name})")
        down = folder.joinpath(f"{match[1]}_{name}.down.sql")
        found[version] = Migration(version, name, entry.read_text(), down.read_text() if down.is_file() else "")
    for stem, file in downs.items():
        if not folder.joinpath(f"{stem}.up.sql").is_file():
            raise ValueError(f"migrations/{dialect}/{file}: a down migration without its up")
    return sorted(found.values())


class Applied(NamedTuple):
    version: int
    name: str
    applied_at: float


class MigrationRefused(Exception):
    """A run that cannot be done as asked (a target below a step this code has no down file for, an unknown
    target); nothing was changed."""


class SchemaAhead(MigrationRefused):
    """A down below a migration this code does not know (a newer gateway applied it, and has its down file)."""


class MigratorBusy(Exception):
    """Another migrator held the schema's lock for longer than this one would wait."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The migrations a database has applied against those this code knows."""

    applied: tuple[Applied, ...]
    known: tuple[Migration, ...]

    @property
    def version(self) -> int:
        """The highest version applied; 0 for an empty database."""
        return max((a.version for a in self.applied), default=0)

    @property
    def latest(self) -> int:
        """The highest version this code knows."""
        return max((m.version for m in self.known), default=0)

    @property
    def pending(self) -> list[Migration]:
        done = {a.version for a in self.applied}
        return [m for m in self.known if m.version not in done]

    @property
    def unknown(self) -> list[Applied]:
        """Applied migrations this code has no file for: a newer gateway made them."""
        known = {m.version for m in self.known}
        return [a for a in self.applied if a.version not in known]

    @property
    def state(self) -> Literal["current", "behind", "ahead"]:
        """ahead: the schema has migrations this code does not know (whatever else); behind: some are pending."""
        if self.unknown:
            return "ahead"
        return "behind" if self.pending else "current"


def plan(status: SchemaStatus, direction: Direction, to: int | None) -> list[Migration]:
    """The steps, in the order they run, that take the schema to `to` (up: every pending one at or below it, all
    when None; down: every applied one above it, newest first). MigrationRefused when they cannot."""
    if direction == "up":
        if to is not None and to > status.latest:
            raise MigrationRefused(f"no migration {to}: the latest this gateway knows is {status.latest}")
        return [m for m in status.pending if to is None or m.version <= to]
    if to is None or to < 0:
        raise MigrationRefused("down needs a target version (0 or more)")
    if above := [a.version for a in status.unknown if a.version > to]:
        raise SchemaAhead(
            f"the schema has migration(s) {', '.join(map(str, above))} that this gateway does not know: run down"
            " with the gateway version that applied them first"
        )
    done = {a.version for a in status.applied}
    steps = [m for m in reversed(status.known) if m.version in done and m.version > to]
    if missing := [m.version for m in steps if not m.down.strip()]:
        raise MigrationRefused(f"migration(s) {', '.join(map(str, missing))} have no down file")
    return steps


def drops(step: Migration) -> list[str]:
    """What a down step destroys, as its statements say (DROP TABLE x, ALTER TABLE x DROP COLUMN y), for the
    confirmation `gateway migrate down` asks for."""
    found = re.findall(r"^\s*((?:DROP\s+TABLE|ALTER\s+TABLE\s+\w+\s+DROP\s+COLUMN)\s+\w+)", step.down, re.I | re.M)
    return [" ".join(s.split()) for s in found]


def warn_if_ahead(status: SchemaStatus, where: str) -> None:
    if status.unknown:
        logger.warning(
            "%s: the schema has migration(s) %s that this gateway (latest %d) does not know: a newer gateway applied"
            " them. Serving on it, as an additive migration allows; see the README's Upgrades",
            where, ", ".join(str(a.version) for a in status.unknown), status.latest,
        )  # fmt: skip


# -- SQLite: synchronous, on the thread that owns the connection ---------------------------------------------

_SQLITE_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"


def sqlite_status(conn: sqlite3.Connection) -> SchemaStatus:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version") if exists else []
    return SchemaStatus(tuple(Applied(int(v), str(n), float(t or 0)) for v, n, t in rows), tuple(migrations()))


def sqlite_migrate(
    conn: sqlite3.Connection,
    direction: Direction,
    to: int | None = None,
    *,
    on_step: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Run the steps to `to`, one transaction each (`conn` in autocommit mode: isolation_level None); the steps
    run, in order."""
    if direction == "up":
        conn.execute(_SQLITE_TABLE)
    done: list[Migration] = []
    while True:
        conn.execute("BEGIN IMMEDIATE")  # the write lock, before the table is read: no other migrator between
        try:
            steps = plan(sqlite_status(conn), direction, to)
            if steps:
                _sqlite_step(conn, steps[0], direction)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if not steps:
            return done
        done.append(steps[0])
        if on_step is not None:
            on_step(steps[0])


def _sqlite_step(conn: sqlite3.Connection, step: Migration, direction: Direction) -> None:
    # executescript would COMMIT the open transaction; run the statements one by one inside it instead.
    for statement in (step.up if direction == "up" else step.down).split(";"):
        if statement.strip():
            conn.execute(statement)
    if direction == "up":
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (step.version, step.name, time.time()))
    else:
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (step.version,))


# -- PostgreSQL: asyncpg ---------------------------------------------------------------------------------------

# The key of the schema's lock; postgres.py takes the same one, transaction-scoped, for partition changes.
LOCK_KEY = "hashtext('gateway.schema:' || coalesce($1::text, current_schema(), ''))"
_PG_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
)


async def pg_status(conn: Any) -> SchemaStatus:
    """As the connection's search path finds schema_migrations (none yet: nothing applied)."""
    rows = []
    if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    return SchemaStatus(
        tuple(Applied(r[0], r[1], r[2]) for r in rows),
        tuple(migrations("postgres")),
    )


async def pg_migrate(
    conn: Any,
    schema: str | None,
    direction: Direction,
    to: int | None = None,
    *,
    lock_wait_s: float | None = None,
    query_timeout_s: float | None = None,
    on_step: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Run the steps to `to` under the schema's lock (waiting for it `lock_wait_s` at most, MigratorBusy past
    that; None: as long as it takes), one transaction each; the steps run, in order. `schema`: made first when
    going up (the connection's search path names it). `query_timeout_s` bounds every statement but the steps'
    own (which may take long on a big table), so that a server that stops answering between two steps fails the
    run with TimeoutError rather than hanging it for good; None: unbounded."""
    try:
        await conn.execute(f"SELECT pg_advisory_lock({LOCK_KEY})", schema, timeout=lock_wait_s)
    except TimeoutError:
        raise MigratorBusy(f"another migrator held the schema's lock for more than {lock_wait_s:g} s") from None
    try:
        async with asyncio.timeout(query_timeout_s):
            if direction == "up":
                if schema:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await conn.execute(_PG_TABLE)
        done: list[Migration] = []
        while True:
            step = await _pg_step(conn, direction, to, query_timeout_s)
            if step is None:
                return done
            done.append(step)
            if on_step is not None:
                on_step(step)
    finally:
        await _unlock(conn, schema)


async def _pg_step(conn: Any, direction: Direction, to: int | None, timeout_s: float | None) -> Migration | None:
    """The next step, run in a transaction of its own; None when there is none."""
    transaction = conn.transaction()
    async with asyncio.timeout(timeout_s):
        await transaction.start()
    try:
        async with asyncio.timeout(timeout_s):
            steps = plan(await pg_status(conn), direction, to)
        if steps:
            step = steps[0]
            await conn.execute(step.up if direction == "up" else step.down)  # unbounded: see pg_migrate
            async with asyncio.timeout(timeout_s):
                if direction == "up":
                    await conn.execute(
                        "INSERT INTO schema_migrations VALUES ($1, $2, $3)", step.version, step.name, time.time()
                    )
                else:
                    await conn.execute("DELETE FROM schema_migrations WHERE version = $1", step.version)
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    await transaction.rollback()
        raise
    async with asyncio.timeout(timeout_s):
        await transaction.commit()
    return steps[0] if steps else None


async def _unlock(conn: Any, schema: str | None) -> None:
    # A session lock outlives the run unless released: on a pooled connection it would hold every later migrator
    # and partition change. A connection that cannot release it (cancelled mid-statement, broken) is closed, which
    # releases it.
    import asyncpg  # type: ignore[import-untyped]  # here: the SQLite path never loads the driver

    if conn.is_closed():
        return
    try:
        await conn.execute(f"SELECT pg_advisory_unlock({LOCK_KEY})", schema, timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        conn.terminate()
