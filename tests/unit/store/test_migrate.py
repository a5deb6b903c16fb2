"""The migrations, on both stores: every down reverses its up (the schema compared, table by table, with one made
by going up alone), a failing step is rolled back alone, two migrators never run at once on PostgreSQL, and a
schema newer than the code is served on, reported and never reverted blindly."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.store import migrate
from gateway.store.migrate import Migration, MigratorBusy, SchemaAhead, migrations, plan
from gateway.store.postgres import PostgresStore
from gateway.store.schema import PostgresSchema, Schema, SQLiteSchema
from gateway.store.sqlite import SQLiteStore
from tests.services import require_postgres
from tests.unit.store.conftest import PostgresSchemas

pytestmark = pytest.mark.anyio
VERSIONS = [m.version for m in migrations("sqlite")]
Snapshot = dict[str, Any]


def sqlite_snapshot(path: str) -> Snapshot:
    """Every table's columns in order (name, type, not null, default, primary key), every index (its columns,
    uniqueness, its SQL) and every view or trigger, of one SQLite file."""
    conn = sqlite3.connect(path)
    try:
        found: Snapshot = {}
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        for kind, name, table, sql in objects.fetchall():
            if kind == "table":
                columns = conn.execute(f"PRAGMA table_xinfo({name})").fetchall()
                found[f"table {name}"] = [tuple(c[1:]) for c in columns]  # without cid
            elif kind == "index":
                columns = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
                found[f"index {name}"] = (table, sql, [tuple(c[1:]) for c in columns])
            else:
                found[f"{kind} {name}"] = (table, sql)
        return _without_bookkeeping(found)
    finally:
        conn.close()


async def postgres_snapshot(dsn: str, schema: str) -> Snapshot:
    """The same of one PostgreSQL schema: relations and their kinds, columns in order (without their attnum, which
    a column dropped leaves a gap in), index definitions, constraints, partitions; the schema's name left out."""
    conn = await asyncpg.connect(dsn)
    try:
        found: Snapshot = {}
        for row in await conn.fetch(
            "SELECT c.relname, c.relkind, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid ="
            " c.relnamespace WHERE n.nspname = $1",
            schema,
        ):
            found[f"relation {row[0]}"] = (row[1], row[2])
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for row in await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
            schema,
        ):
            columns.setdefault(row[0], []).append(tuple(row[1:]))
        found |= {f"columns {t}": c for t, c in columns.items()}
        for row in await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema):
            found[f"index {row[0]}"] = row[1]
        for row in await conn.fetch(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = $1",
            schema,
        ):
            found[f"constraint {row[0]}.{row[1]}"] = row[2]
        return _without_bookkeeping({_unqualified(k, schema): _unqualified(v, schema) for k, v in found.items()})
    finally:
        await conn.close()


def _without_bookkeeping(found: Snapshot) -> Snapshot:
    # schema_migrations is made by the first run and kept (its rows are the versions, asserted on their own).
    return {k: v for k, v in found.items() if "schema_migrations" not in k}


def _unqualified(value: Any, schema: str) -> Any:
    if isinstance(value, str):
        return value.replace(f"{schema}.", "")
    if isinstance(value, tuple | list):
        return type(value)(_unqualified(v, schema) for v in value)
    return value


class Subject:
    """One store's schema under test: a fresh one, a way to take its snapshot, and more of the same kind."""

    def __init__(self, new: Callable[[], Schema], snapshot: Callable[[Schema], Awaitable[Snapshot]]) -> None:
        self.new = new
        self._snapshot = snapshot

    async def snapshot(self, schema: Schema) -> Snapshot:
        return await self._snapshot(schema)


@pytest.fixture(params=["sqlite", "postgres"])
async def subject(request: pytest.FixtureRequest, tmp_path, anyio_backend: str) -> AsyncIterator[Subject]:
    if request.param == "sqlite":
        count = iter(range(1_000))

        async def sqlite_snap(schema: Schema) -> Snapshot:
            assert isinstance(schema, SQLiteSchema)
            return sqlite_snapshot(schema.path)

        yield Subject(lambda: SQLiteSchema(str(tmp_path / f"g{next(count)}.db")), sqlite_snap)
        return
    schemas = PostgresSchemas(require_postgres())
    made: list[PostgresSchema] = []

    def new_pg() -> Schema:
        name = schemas.new_schema()
        made.append(PostgresSchema(schemas.dsn, name, name, timeout_s=10, lock_wait_s=30))
        return made[-1]

    async def pg_snap(schema: Schema) -> Snapshot:
        assert isinstance(schema, PostgresSchema)
        assert schema.schema
        return await postgres_snapshot(schemas.dsn, schema.schema)

    try:
        yield Subject(new_pg, pg_snap)
    finally:
        for schema in made:
            await schema.close()
        await schemas.drop()


async def test_every_down_migration_reverses_its_up(subject: Subject) -> None:
    # The schema at each version, made by going up alone.
    reference = subject.new()
    at: dict[int, Snapshot] = {0: await subject.snapshot(reference)}
    for version in VERSIONS:
        assert [m.version for m in await reference.migrate("up", version)] == [version]
        at[version] = await subject.snapshot(reference)
        assert at[version] != at[max(0, version - 1)] or version == 0
    # Each step down then up again, from the top: after a down the schema is the one before its up, exactly.
    schema = subject.new()
    await schema.migrate("up", None)
    assert await subject.snapshot(schema) == at[VERSIONS[-1]]
    previous = [0, *VERSIONS[:-1]]
    for version, below in reversed(list(zip(VERSIONS, previous, strict=True))):
        assert [m.version for m in await schema.migrate("down", below)] == [version]
        assert await subject.snapshot(schema) == at[below], f"down {version} does not undo its up"
    assert (await schema.status()).version == 0
    # And the whole way: up all, down to 0, up all is a fresh schema.
    await schema.migrate("up", None)
    await schema.migrate("down", 0)
    await schema.migrate("up", None)
    assert await subject.snapshot(schema) == at[VERSIONS[-1]]
    assert (await schema.status()).state == "current"


async def test_a_failing_step_is_rolled_back_alone(subject: Subject, monkeypatch) -> None:
    good = Migration(1, "good", "CREATE TABLE good_one (x integer)", "DROP TABLE good_one")
    bad = Migration(2, "bad", "CREATE TABLE half_done (x integer); SELECT no_such_column FROM good_one", "")
    monkeypatch.setattr(migrate, "migrations", lambda dialect="sqlite": [good, bad])
    schema = subject.new()
    with pytest.raises((sqlite3.Error, asyncpg.PostgresError)):
        await schema.migrate("up", None)
    status = await schema.status()
    assert [a.version for a in status.applied] == [1]
    snapshot = str(await subject.snapshot(schema))
    assert "good_one" in snapshot
    assert "half_done" not in snapshot  # the failing step's first statement went with it


async def test_a_schema_newer_than_the_code_is_served_on_reported_and_not_reverted_blindly(
    subject: Subject, caplog
) -> None:
    schema = subject.new()
    await schema.migrate("up", None)
    await _record_future_migration(schema)
    status = await schema.status()
    assert status.state == "ahead"
    assert [a.version for a in status.unknown] == [9999]
    assert status.version == 9999
    with pytest.raises(SchemaAhead, match="9999"):
        plan(status, "down", 5)
    with pytest.raises(SchemaAhead):
        await schema.migrate("down", 0)
    assert (await schema.status()).version == 9999  # nothing reverted
    assert await schema.migrate("up", None) == []
    assert await schema.migrate("down", 9999) == []
    # A gateway of this version opens it, warns, and writes its records as before.
    caplog.set_level(logging.WARNING, logger="gateway.store")
    store = _store_on(schema)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()
    assert "9999" in caplog.text
    assert "does not know" in caplog.text


async def _record_future_migration(schema: Schema) -> None:
    if isinstance(schema, SQLiteSchema):
        conn = sqlite3.connect(schema.path)
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
        conn.commit()
        conn.close()
        return
    assert isinstance(schema, PostgresSchema)
    conn = await asyncpg.connect(schema.dsn, server_settings={"search_path": schema.schema or "public"})
    await conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
    await conn.close()


def _store_on(schema: Schema) -> SQLiteStore | PostgresStore:
    if isinstance(schema, SQLiteSchema):
        return SQLiteStore(schema.path)
    assert isinstance(schema, PostgresSchema)
    return PostgresStore(schema.dsn, schema=schema.schema)


LOCK = "SELECT pg_advisory_lock(hashtext('gateway.schema:' || $1::text))"


async def test_a_second_migrator_waits_for_the_first_and_gives_up_past_its_limit(pg: PostgresSchemas) -> None:
    name = pg.new_schema()
    holder = await asyncpg.connect(pg.dsn)
    try:
        await holder.execute(LOCK, name)  # another migrator, mid-run
        impatient = PostgresSchema(pg.dsn, name, name, timeout_s=10, lock_wait_s=0.2)
        with pytest.raises(MigratorBusy):
            await impatient.migrate("up", None)
        await impatient.close()
        # A gateway starting meanwhile waits for the lock, and migrates once it is free.
        store = pg.store(name, application_name="gw-waiting")
        opening = asyncio.ensure_future(store.open())
        await _wait_for(lambda: _waits_for_a_lock(pg, "gw-waiting"))
        assert not opening.done()
        await holder.execute("SELECT pg_advisory_unlock(hashtext('gateway.schema:' || $1::text))", name)
        await asyncio.wait_for(opening, timeout=60)
    finally:
        await holder.close()
    rows = await pg.fetch(f"SELECT version FROM {name}.schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == VERSIONS
    # The lock was let go: another run takes it at once (nothing to do).
    after = PostgresSchema(pg.dsn, name, name, timeout_s=10, lock_wait_s=0.2)
    assert await after.migrate("up", None) == []
    await after.close()


async def _waits_for_a_lock(pg: PostgresSchemas, application_name: str) -> bool:
    rows = await pg.fetch(
        "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE a.application_name = $1 AND l.locktype = 'advisory' AND NOT l.granted",
        application_name,
    )
    return bool(rows)


async def _wait_for(condition: Callable[[], Awaitable[bool]], deadline_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def test_the_shipped_migrations_are_one_sequence_in_both_dialects() -> None:
    sqlite, postgres = migrations("sqlite"), migrations("postgres")
    assert [m.version for m in sqlite] == list(range(1, len(sqlite) + 1))
    assert [(m.version, m.name) for m in postgres] == [(m.version, m.name) for m in sqlite]
    assert all(m.down.strip() for m in (*sqlite, *postgres))


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"README.up.sql": "", "0001_a.up.sql": ""}, "README.up.sql: not a migration"),
        ({"0001_a.up.sql": "", "0001-b.up.sql": ""}, "0001-b.up.sql: not a migration"),
        ({"0001_a.up.sql": "", "0001_a.sql": ""}, "0001_a.sql: not a migration"),
        ({"0001_a.up.sql": "", "0001_b.up.sql": ""}, "version 0001 twice (a, b)"),
        ({"0001_a.up.sql": "", "0002_b.down.sql": ""}, "0002_b.down.sql: a down migration without its up"),
    ],
)
def test_a_stray_file_among_the_migrations_is_named_not_skipped(
    tmp_path, monkeypatch, files: dict[str, str], named: str
) -> None:
    """A file left by hand or a bad merge: had it been skipped, a step would be missing or applied under another's
    version (two files of one version: the second never runs, its version counted as done)."""
    folder = tmp_path / "migrations" / "sqlite"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    monkeypatch.setattr(migrate.resources, "files", lambda package: tmp_path)
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        migrations("sqlite")
