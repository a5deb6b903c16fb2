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
    MigratorBusy,
    SchemaStatus,
    migrations,
    pg_migrate,
    pg_status,
    sqlite_migrate,
    sqlite_status,
)

OnStep = Callable[[Migration], None]
GATEWAY_APPLICATION = "gateway"  # a serving gateway's connections, as pg_stat_activity names them (postgres.py)


class Schema(Protocol):
    where: str  # for messages: never a password

    async def status(self) -> SchemaStatus:
        """StoreUnavailable when the store cannot answer."""

    async def migrate(self, direction: Direction, to: int | None, *, on_step: OnStep | None = None) -> list[Migration]:
        """The steps run, in order. MigrationRefused, MigratorBusy, or the driver's error on a failing step."""

    async def gateways_connected(self) -> int:
        """How many connections gateways have open on this database now (0 where that cannot be told: SQLite)."""

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
        return SQLiteSchema(store.path, timeout_s=timeout_s, lock_wait_s=lock_wait_s)
    from gateway.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return PostgresSchema(store.dsn, store.schema, store.where, timeout_s=timeout_s, lock_wait_s=lock_wait_s)


class SQLiteSchema:
    """SQLite's calls run on the caller's thread: a command line has nothing else for its loop to do, and a local
    file does not hang. A lock held by a gateway or another migrator is waited for (busy_timeout) as long as the
    command's timeout says: `timeout_s` for reading the schema, `lock_wait_s` for a migration, then MigratorBusy."""

    def __init__(self, path: str, *, timeout_s: float = 10.0, lock_wait_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.lock_wait_s = lock_wait_s
        self.where = f"sqlite {path}"
        self.missing = path != ":memory:" and not os.path.exists(path)

    def _connect(self, *, create: bool, wait_s: float) -> sqlite3.Connection:
        try:
            if create or self.path == ":memory:":
                conn = sqlite3.connect(self.path, isolation_level=None)
            else:  # read only: a status or a down must not leave an empty file behind where none was
                uri = Path(self.path).absolute().as_uri() + "?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={max(0, int(wait_s * 1000))}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc
        return conn

    async def status(self) -> SchemaStatus:
        if self.missing:  # nothing applied yet: the gateway makes the file when it starts, if it can
            self._check_folder()
            return SchemaStatus((), tuple(migrations()))
        conn = self._connect(create=False, wait_s=self.timeout_s)
        try:
            return sqlite_status(conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc
        finally:
            conn.close()

    def _check_folder(self) -> None:
        """StoreUnavailable when the file cannot be made where the path says (no folder, or not writable)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise StoreUnavailable(f"{self.where}: no such file, and no folder {folder} to make it in")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"{self.where}: no such file, and the folder {folder} is not writable")

    async def migrate(self, direction: Direction, to: int | None, *, on_step: OnStep | None = None) -> list[Migration]:
        conn = self._connect(create=direction == "up", wait_s=self.lock_wait_s)
        try:
            return sqlite_migrate(conn, direction, to, on_step=on_step)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # extended codes too
                raise
            raise MigratorBusy(
                f"the file was locked (by a gateway writing or another migrator) for more than {self.lock_wait_s:g} s"
            ) from None
        finally:
            conn.close()
            self.missing = False

    async def gateways_connected(self) -> int:
        return 0  # a file does not say who has it open

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
        try:
            return await pg_migrate(
                conn, self.schema, direction, to,
                lock_wait_s=self.lock_wait_s, query_timeout_s=self.timeout_s, on_step=on_step,
            )  # fmt: skip
        except TimeoutError as exc:  # between two steps: the step before is committed, the next one never began
            raise StoreUnavailable(f"{self.where}: no answer within {self.timeout_s:g} s") from exc

    async def gateways_connected(self) -> int:
        import asyncpg

        conn = await self._connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = $1 AND pid <> pg_backend_pid()",
                    GATEWAY_APPLICATION,
                )
        except TimeoutError as exc:
            raise StoreUnavailable(f"{self.where}: no answer within {self.timeout_s:g} s") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"{self.where}: {describe(exc)}") from exc
        return int(count)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=self.timeout_s)
            except (TimeoutError, OSError):
                conn.terminate()
