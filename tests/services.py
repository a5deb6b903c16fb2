"""Real Redis and PostgreSQL for their backends: skipped with a reason where none answers, unless
GATEWAY_TEST_SERVICES=required (set by .ci/run), which turns the skip into a failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from urllib.parse import urlsplit

import asyncpg
import pytest

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):  # refused at once when absent; slow when busy
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _answers(host, port):
        return
    message = f"{service} does not answer on {host}:{port}"
    if os.environ.get("GATEWAY_TEST_SERVICES") == "required":
        pytest.fail(f"{message} and GATEWAY_TEST_SERVICES=required")
    pytest.skip(message)


def require_redis() -> str:
    require("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def require_postgres() -> str:
    """The DSN of a PostgreSQL to test against; tests make a schema of their own in it and drop it after."""
    url = urlsplit(POSTGRES_DSN)
    require("PostgreSQL", url.hostname or "127.0.0.1", url.port or 5432)
    return POSTGRES_DSN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    """One query on a connection of its own, from a test's synchronous code."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def drop_schema(dsn: str, name: str) -> None:
    """A test's own schema, gone (and nothing said if the server is gone too)."""
    with contextlib.suppress(Exception):
        postgres_fetch(dsn, f"DROP SCHEMA IF EXISTS {name} CASCADE")
