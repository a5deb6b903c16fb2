"""A lean, pipelined Redis connection for the rate limiter: one script call per request sits on the hot path.

redis-py's asyncio client spent about a third of the event loop's time under the limiter (py-spy: pool checkout,
retry wrapper, Python command packing, per-call locks). This connection is one socket per process: every
request writes its command at once (hiredis packs it), replies come back in order and resolve futures FIFO,
so concurrent requests share the socket with no pool and no lock. One timer per connection, not per call,
enforces the timeout: when the oldest call is overdue the connection is dropped and every call on it fails,
which is what the limiter's failover needs to know.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from gateway.config.redis_url import is_cluster

Arg = str | bytes | int | float


def _pack(args: tuple[str | bytes | int | float, ...]) -> bytes:
    # hiredis's stubs type the argument as a one-element tuple; it takes any number.
    packed: bytes = hiredis.pack_command(cast(Any, args))
    return packed


class RedisUnavailable(Exception):
    """The connection could not be made, was lost, timed out, or Redis answered with an error."""


class RedisClient(Protocol):
    """What the gateway asks of Redis, one server (RespClient) or a cluster (redis_cluster.ClusterClient): raw
    replies as hiredis gives them, every failure a RedisUnavailable after at most the client's timeout."""

    cluster: bool  # keys of one call must then share a hash slot

    async def call(self, *args: Arg) -> Any: ...

    async def unlink_matching(self, pattern: str, count: int) -> int:
        """Remove every key that matches `pattern` (SCAN's MATCH), `count` a step; how many were removed."""
        ...

    async def close(self) -> None: ...


def connect(url: str, *, timeout_s: float) -> RedisClient:
    """The client for `url`: redis+cluster:// a Redis Cluster, anything else one server. Connects on first use."""
    if is_cluster(url):
        from gateway.state.redis_cluster import ClusterClient

        return ClusterClient(url, timeout_s=timeout_s)
    return RespClient(url, timeout_s=timeout_s)


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                future, _ = self.waiting.popleft()
                if not future.done():  # a caller that gave up (its request was cancelled) no longer listens
                    future.set_result(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisUnavailable(f"redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable(f"redis connection lost: {exc or 'closed'}"))

    def request(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None:
            raise RedisUnavailable(str(self.lost or "redis: not connected"))
        future = self.loop.create_future()
        self.waiting.append((future, time.monotonic() + self.timeout_s))
        self.transport.write(packed)
        if self.timer is None:
            self.timer = self.loop.call_later(self.timeout_s, self._check_overdue)
        return future

    def _check_overdue(self) -> None:
        self.timer = None
        if not self.waiting:
            return
        left = self.waiting[0][1] - time.monotonic()
        if left <= 0:
            self.fail(RedisUnavailable(f"redis: no answer within {self.timeout_s * 1000:.0f} ms"))
        else:
            self.timer = self.loop.call_later(left, self._check_overdue)

    def fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class RespClient:
    """One pipelined connection to the Redis of `url` (redis://, rediss://, unix://), made on first use and
    again after a failure."""

    cluster = False

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.params = parse_url(url)
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def call(self, *args: Arg) -> Any:
        """One command; Redis's error replies raise RedisUnavailable with Redis's message."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        reply = await protocol.request(_pack(args))
        if isinstance(reply, hiredis.ReplyError):
            raise RedisUnavailable(f"redis: {reply}")
        return reply

    async def call_packed(self, packed: bytes) -> Any:
        """`call` of a command already in RESP (a caller that encodes the parts that repeat once: the limiter)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        reply = await protocol.request(packed)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisUnavailable(f"redis: {reply}")
        return reply

    async def unlink_matching(self, pattern: str, count: int) -> int:
        removed = 0
        cursor = b"0"
        while True:
            cursor, keys = await self.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if keys:
                removed += int(await self.call("UNLINK", *keys))
            if cursor in (b"0", "0", 0):
                return removed

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def _connect(self) -> _Protocol:
        # Requests that arrive while the connection is being made wait for the same attempt.
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._open())
            # Cleared when the attempt ends, whoever still waits: a caller cancelled meanwhile must not leave a
            # finished attempt for the next caller to inherit (its failure would be stale).
            connecting.add_done_callback(self._connected)
        return await asyncio.shield(connecting)

    def _connected(self, attempt: asyncio.Future[_Protocol]) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: a failure nobody awaited is not reported as never retrieved

    async def _open(self) -> _Protocol:
        params = self.params
        loop = asyncio.get_running_loop()
        protocol = _Protocol(self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                if "path" in params:
                    await loop.create_unix_connection(lambda: protocol, params["path"])
                else:
                    tls = ssl.create_default_context() if params.get("connection_class") is SSLConnection else None
                    await loop.create_connection(
                        lambda: protocol, params.get("host", "localhost"), params.get("port", 6379), ssl=tls
                    )
                if params.get("password"):
                    credentials = [params["username"]] if params.get("username") else []
                    await self._setup(protocol, "AUTH", *credentials, params["password"])
                if params.get("db"):
                    await self._setup(protocol, "SELECT", params["db"])
        except (OSError, TimeoutError) as exc:
            protocol.fail(RedisUnavailable(f"redis: cannot connect: {str(exc) or 'timed out'}"))
            raise RedisUnavailable(f"redis: cannot connect: {str(exc) or 'timed out'}") from exc
        self._protocol = protocol
        return protocol

    @staticmethod
    async def _setup(protocol: _Protocol, *args: str | int) -> None:
        reply = await protocol.request(_pack(args))
        if isinstance(reply, hiredis.ReplyError):
            protocol.fail(RedisUnavailable(f"redis: {args[0]} failed: {reply}"))
            raise RedisUnavailable(f"redis: {args[0]} failed: {reply}")


class Script:
    """A Lua script run by its SHA; loaded again (EVAL) when Redis does not know it (after a restart or a
    SCRIPT FLUSH)."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._evalsha = _pack(("EVALSHA", self.sha))[4:]  # the two bulk strings, without the array's header
        self._eval = _pack(("EVAL", source))[4:]

    async def __call__(self, keys: list[str], args: list[str | int | float]) -> Any:
        try:
            return await self.client.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisUnavailable as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        return await self.client.call("EVAL", self.source, len(keys), *keys, *args)

    async def call_packed(self, client: RespClient, items: int, tail: bytes) -> Any:
        """The script on one server, its arguments already in RESP: `tail` holds `items` bulk strings, the number
        of keys, the keys, then the arguments (what `__call__` would have hiredis pack)."""
        head = b"*%d\r\n" % (items + 2)
        try:
            return await client.call_packed(head + self._evalsha + tail)
        except RedisUnavailable as exc:
            if "NOSCRIPT" not in str(exc):
                raise
        return await client.call_packed(head + self._eval + tail)


def bulk(value: Arg) -> bytes:
    """One argument as a RESP bulk string, as hiredis.pack_command writes it: text in UTF-8, an int in decimal,
    a float as its repr."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bytes):
        data = value
    elif isinstance(value, float):
        data = repr(value).encode()
    else:
        data = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(data), data)
