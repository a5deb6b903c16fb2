"""An upstream's answer: its status and headers once its head is in, its body read whole or chunk by chunk.

The providers read it as they read aiohttp's ClientResponse (`status`, `headers.get`, `content_type`, `read()`,
`content.iter_any()`, `release()`, `close()`): the same names, so that providers/base.py's stream helpers take
either, and a provider's code reads as it did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.providers.http.errors import ClientPayloadError

if TYPE_CHECKING:
    from gateway.providers.http.connection import Connection
    from gateway.providers.http.pool import Pool


class Headers:
    """The answer's headers as they came (bytes), looked up by name without regard to case. Only a few are ever read
    (retry-after, content-type), so nothing is lowered or decoded until one is."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[bytes, bytes]]) -> None:
        self._items = items

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for item, value in self._items:
            if item.lower() == key:
                return value.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for item, value in self._items if item.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (item.decode("latin-1") for item, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(item.decode("latin-1"), value.decode("latin-1")) for item, value in self._items]


class Response:
    """One exchange's answer, holding its connection until `release()` (which returns the connection to its pool
    when the whole answer arrived, and closes it otherwise) or `close()`. Iterated (`async for chunk in
    response.content.iter_any()`), it yields the body as it arrives, each chunk what had arrived by then."""

    __slots__ = ("status", "_raw", "_pool", "_connection", "_body")

    def __init__(self, pool: Pool, connection: Connection) -> None:
        self.status = connection.status
        self._raw = connection.headers
        self._pool = pool
        self._connection: Connection | None = connection
        self._body: bytes | None = None

    @property
    def headers(self) -> Headers:
        return Headers(self._raw)

    @property
    def content_type(self) -> str:
        """The media type, lowered, without parameters; application/octet-stream when none is given (aiohttp's)."""
        for name, value in self._raw:
            if len(name) == 12 and name.lower() == b"content-type":
                return value.partition(b";")[0].strip().lower().decode("latin-1")
        return "application/octet-stream"

    @property
    def content_length(self) -> int | None:
        value = Headers(self._raw).get("content-length")
        return int(value) if value is not None and value.strip().isdigit() else None

    @property
    def content(self) -> Response:
        return self  # aiohttp's spelling: response.content.iter_any()

    def iter_any(self) -> Response:
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration  # released or closed
        while not connection.chunks:
            if connection.error is not None:
                raise connection.error
            if connection.complete:
                raise StopAsyncIteration
            await connection.wait()
        return connection.take()

    async def read(self) -> bytes:
        """The whole body (kept: a second read returns it again)."""
        if self._body is None:
            connection = self._connection
            if connection is None:
                raise ClientPayloadError("The answer was released before its body was read.")
            if connection.complete and connection.error is None:  # all in already: no coroutine to await
                self._body = connection.take()
            else:
                self._body = await connection.read()
        return self._body

    def release(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._pool.release(connection, True)

    def close(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._pool.release(connection, False)

    def __del__(self) -> None:
        # An answer dropped without release() or close(): a stream whose generator never started (a filter replaced
        # the reply; the client left first) is closed without running its finally. Its connection is closed here,
        # else its pool slot would be held for ever (aiohttp's ClientResponse does the same).
        connection = self._connection
        if connection is not None:
            self._connection = None
            with contextlib.suppress(RuntimeError):  # the loop closed already (the process is ending)
                self._pool.release(connection, False)
