"""A store's schema on its own, for `gateway migrate` and `gateway store check`: one connection, no pool, and
nothing applied on connecting (a store applies pending migrations when it opens; these must not). The steps are
gateway/store/migrate.py's, the ones the stores take."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gateway.store.base import StoreUnavailable, describe, open_store
from gateway.store.migrate import (
    Direction,
    Migration,
    SchemaStatus,
    migrations,
    pg_migrate,
    pg_status,
    sqlite_migrate,
    sqlite_status,
)

OnStep = Callable[[Migration], None]


class Schema(Protocol):
    where: str  # for messages: never a password

    async def status(self) -> SchemaStatus:
        """StoreUnavailable when the store cannot answer."""

    async def migrate(self, direction: Direction, to: int | None, *, on_step: OnStep | None = None) -> list[Migration]:
        """The steps run, in order. MigrationRefused, MigratorBusy, or the driver's error on a failing step."""

    async def close(self) -> None: ...


def schema_of(url: str, *, timeout_s: float = 10.0, lock_wait_s: float = 60.0) -> Schema | None:
    """The schema of the store `url` names (telemetry.store); None for no store. `timeout_s` bounds connecting and
    every query but the steps themselves (a migration may take long); `lock_wait_s`, the wait for another
    migrator on PostgreSQL."""
    store = open_store(url)
    if store is None:
        return None
    from gateway.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteSchema(store.path)
    from gateway.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return PostgresSchema(store.dsn, store.schema, store.where, timeout_s=timeout_s, lock_wait_s=lock_wait_s)


class SQLiteSchema:
    """SQLite's calls run on the caller's thread: a command line has nothing else for its loop to do, and a local
    file does not hang (a write lock held by a gateway is waited for up to busy_timeout, then an error)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = f"sqlite {path}"
        self.missing = path != ":memory:" and not os.path.exists(path)

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        try:
            if create or self.path == ":memory:":
                conn = sqlite3.connect(self.path, isolation_level=None)
            else:  # read only: a status or a down must not leave an empty file behind where none was
                uri = Path(self.path).absolute().as_uri() + "?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc
        return conn

    async def status(self) -> SchemaStatus:
        if self.missing:  # nothing applied yet: the gateway makes the file when it starts
            return SchemaStatus((), tuple(migrations()))
        conn = self._connect(create=False)
        try:
            return sqlite_status(conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc
        finally:
            conn.close()

    async def migrate(self, direction: Direction, to: int | None, *, on_step: OnStep | None = None) -> list[Migration]:
        conn = self._connect(create=direction == "up")
        try:
            return sqlite_migrate(conn, direction, to, on_step=on_step)
        finally:
            conn.close()
            self.missing = False

    async def close(self) -> None:
        pass


class PostgresSchema:
    def __init__(self, dsn: str, schema: str | None, where: str, *, timeout_s: float, lock_wait_s: float) -> None:
        self.dsn = dsn
        self.schema = schema
        self.where = f"postgres {where}"
        self.timeout_s = timeout_s
        self.lock_wait_s = lock_wait_s
        self._conn: Any = None

    async def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        import asyncpg  # type: ignore[import-untyped]

        settings = {"application_name": "gateway-migrate"}
        if self.schema:
            settings["search_path"] = self.schema
        try:
            # asyncpg's own timeout covers the connection and its start-up; the outer one is the promise that a
            # server that accepts and never answers fails this within timeout_s, whatever the driver does.
            async with asyncio.timeout(self.timeout_s + 1):
                self._conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s, server_settings=settings)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self.where}: no answer within {self.timeout_s:g} s") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"{self.where}: cannot connect: {describe(exc)}") from exc
        return self._conn

    async def status(self) -> SchemaStatus:
        import asyncpg

        conn = await self._connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await pg_status(conn)
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self.where}: no answer within {self.timeout_s:g} s") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc

    async def migrate(self, direction: Direction, to: int | None, *, on_step: OnStep | None = None) -> list[Migration]:
        conn = await self._connection()
        return await pg_migrate(conn, self.schema, direction, to, lock_wait_s=self.lock_wait_s, on_step=on_step)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=self.timeout_s)
            except (TimeoutError, OSError):
                conn.terminate()
