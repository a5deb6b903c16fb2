"""The connections to one origin (scheme, host, port): kept alive and reused, at most `limit` of them open; a call
beyond waits its turn (first come, first served) for one to come back, within the connect timeout.

The idle connections are a stack: the one released last is lent first, so that under a light load a few stay warm
and the rest reach the keep-alive time, after which they are closed. One timer sweeps them, armed only while some
are idle. A connection the server closed while it was idle leaves the stack when asyncio says so.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from typing import Any, NamedTuple, Protocol

from gateway.config import Timeouts
from gateway.providers.http.connection import Connection
from gateway.providers.http.errors import ConnectError, ConnectTimeout


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class ConnectTiming(Protocol):
    """Where a call notes when opening a new connection (DNS, TCP, TLS) began and ended, in perf_counter_ns: the
    request's context, for its trace. A call served by a kept-alive connection notes nothing."""

    upstream_connect: tuple[int, int] | None


class Resolver:
    """Addresses by (host, port), from loop.getaddrinfo (a thread), kept for ttl_s."""

    def __init__(self, ttl_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[float, list[tuple[int, Any]]]] = {}

    async def resolve(self, host: str, port: int) -> list[tuple[int, Any]]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        hit = self._cache.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectError(f"Cannot resolve {host}: {exc}") from exc
        addresses: list[tuple[int, Any]] = []
        for family, _, _, _, address in infos:
            if (family, address) not in addresses:
                addresses.append((family, address))
        self._cache[host, port] = (now + self.ttl_s, addresses)
        return addresses


class Pool:
    def __init__(
        self,
        origin: Origin,
        limit: int,
        resolver: Resolver,
        ssl_context: ssl.SSLContext | None,
        keep_alive_s: float,
    ) -> None:
        self.origin = origin
        self.limit = limit
        self.resolver = resolver
        self.ssl_context = ssl_context
        self.keep_alive_s = keep_alive_s
        self.loop = asyncio.get_running_loop()
        self.size = 0  # open or opening, idle or lent out
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    def idle_one(self) -> Connection | None:
        """The kept-alive connection released last, if one is idle (else `connect`)."""
        idle = self.idle
        while idle:
            connection = idle.pop()
            connection.idle = False
            if not connection.closed:
                return connection
            self._gone(connection)
        return None

    async def connect(self, timeouts: Timeouts, timing: ConnectTiming | None) -> Connection:
        """A new connection, or one handed back while this call waited for its turn; the wait for a turn, DNS, TCP
        and TLS within timeouts.connect_s together."""
        try:
            async with asyncio.timeout(timeouts.connect_s):
                if self.size >= self.limit:
                    handed = await self._turn()
                    if handed is not None:
                        return handed
                else:
                    self.size += 1  # a slot, held while it opens
                try:
                    return await self._open(timing)
                except BaseException:
                    self._slot_freed()
                    raise
        except TimeoutError as exc:
            if isinstance(exc, ConnectTimeout):
                raise
            raise ConnectTimeout(f"No connection to {self.origin.host} within {timeouts.connect_s:g} s.") from None

    def release(self, connection: Connection, reuse: bool) -> None:
        """An exchange is over: its connection to the next in line, back to the idle stack, or closed."""
        if connection.finish(reuse):
            self._put_back(connection)
        else:
            self._gone(connection)

    def lost(self, connection: Connection) -> None:
        """An idle connection the server closed."""
        connection.idle = False
        if connection in self.idle:
            self.idle.remove(connection)
        self._gone(connection)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self.open):
            connection.close()
        self.idle.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(ConnectError(f"The client for {self.origin.host} is closed."))
        self.waiters.clear()

    # -- inside ------------------------------------------------------------------------------------------------------

    async def _turn(self) -> Connection | None:
        """Wait for a connection handed back (returned) or a slot freed (None: this call opens one)."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            # Timed out or cancelled: what was handed over just before goes on to the next in line.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is None:
                    self._slot_freed()
                else:
                    self._put_back(handed)
            else:
                waiter.cancel()
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            raise

    def _put_back(self, connection: Connection) -> None:
        if self.waiters and self._hand(connection):
            return
        connection.idle = True
        connection.idle_since = self.loop.time()
        self.idle.append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_at(connection.idle_since + self.keep_alive_s, self._expire)

    def _hand(self, handed: Connection | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _slot_freed(self) -> None:
        if self.waiters and self._hand(None):
            return  # the slot passes to the next in line, who opens a connection in it
        self.size -= 1

    def _gone(self, connection: Connection) -> None:
        self.open.discard(connection)
        self._slot_freed()

    def _expire(self) -> None:
        self._sweep = None
        deadline = self.loop.time() + 0.005 - self.keep_alive_s  # idle since before this: expired
        idle = self.idle
        while idle and idle[0].idle_since <= deadline:
            connection = idle.pop(0)
            connection.idle = False
            connection.close()
            self._gone(connection)
        if idle:
            self._sweep = self.loop.call_at(idle[0].idle_since + self.keep_alive_s, self._expire)

    async def _open(self, timing: ConnectTiming | None) -> Connection:
        started = time.perf_counter_ns()
        try:
            host, port = self.origin.host, self.origin.port
            failures = []
            for family, address in await self.resolver.resolve(host, port):
                try:
                    connection = await self._open_at(family, address)
                except OSError as exc:  # refused, unreachable: the next address
                    failures.append(f"{address[0]}: {exc}")
                    continue
                self.open.add(connection)
                return connection
            raise ConnectError(f"Cannot connect to {host}:{port}: {'; '.join(failures) or 'no address'}")
        finally:
            if timing is not None:
                timing.upstream_connect = (started, time.perf_counter_ns())

    async def _open_at(self, family: int, address: Any) -> Connection:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self.loop.sock_connect(sock, address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ssl_context
            _, connection = await self.loop.create_connection(
                lambda: Connection(self, self.loop),
                sock=sock,
                ssl=tls,
                server_hostname=self.origin.host if tls is not None else None,
            )
        except ssl.SSLError as exc:  # the handshake: a certificate refused, a protocol not spoken
            sock.close()
            raise ConnectError(f"TLS with {self.origin.host} failed: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        return connection
