"""Stores to test against: a fresh SQLite file, and a PostgreSQL schema of the test's own, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.store.base import RECORD_COLUMNS
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.services import require_postgres


def record(i: int, project: str = "p1", ts: float | None = None) -> dict:
    base: dict = {c: "" for c in RECORD_COLUMNS}
    base.update(
        id=f"r{i}", ts=1000.0 + i if ts is None else ts, endpoint="chat/completions", project=project, status=200,
        model_requested="demo", spans=[{"name": "auth", "ms": 0.01}], tags={"k": "v"}, cost_usd=None, stream=False,
        latency_ms=12.5, upstream_ms=10.0, ttfb_ms=None, ttft_ms=None, overhead_ms=0.5, prompt_tokens=10,
        completion_tokens=5, cached_tokens=0, reasoning_tokens=0, total_tokens=15, usage_source="upstream",
        attempts=1, route_reason="weighted", metadata={}, saved_usd=None,
    )  # fmt: skip
    return base


class PostgresSchemas:
    """Makes stores in schemas of their own; drops every schema it named at the end of the test."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.names: list[str] = []
        self.stores: list[PostgresStore] = []

    def new_schema(self) -> str:
        self.names.append(f"gw_test_{uuid.uuid4().hex[:12]}")
        return self.names[-1]

    def store(self, schema: str | None = None, **options: object) -> PostgresStore:
        store = PostgresStore(self.dsn, schema=schema or self.new_schema(), **options)
        self.stores.append(store)
        return store

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def drop(self) -> None:
        for store in self.stores:
            await store.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            for name in self.names:
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def pg(anyio_backend: str) -> AsyncIterator[PostgresSchemas]:
    schemas = PostgresSchemas(require_postgres())
    try:
        yield schemas
    finally:
        await schemas.drop()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path, anyio_backend: str) -> AsyncIterator[object]:
    """An open store of each kind."""
    if request.param == "sqlite":
        sqlite = SQLiteStore(str(tmp_path / "g.db"))
        await sqlite.open()
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    schemas = PostgresSchemas(require_postgres())
    try:
        postgres = schemas.store()
        await postgres.open()
        yield postgres
    finally:
        await schemas.drop()
