"""The upstream client: POST a body to a URL over a kept-alive connection, and hand back the answer once its head
is in. One per provider, made when the provider opens, with a pool per origin the provider calls.

A call on a connection that had served an earlier one may meet the server closing it meanwhile (its keep-alive
time ran out as the request went): such a call, failed before any byte of its answer came, is sent once more on
a new connection. Never after a byte came: the server then saw the request.
"""

from __future__ import annotations

import ssl
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from gateway.config import Timeouts
from gateway.providers.http.errors import ClientOSError, ConnectError, ServerDisconnectedError
from gateway.providers.http.pool import ConnectTiming, Origin, Pool, Resolver
from gateway.providers.http.response import Response

# aiohttp's default keep-alive time for idle connections: kept, so that upstreams see what they saw before.
KEEP_ALIVE_S = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TARGETS_KEPT = 4096  # URLs parsed and kept (a provider's are a few per deployment)


class Target(NamedTuple):
    pool: Pool
    line: bytes  # the request line and the host header


def header_block(headers: dict[str, str]) -> bytes:
    """Headers as the bytes of a request's head, made once per provider. A name or value that would break the
    head (a newline in a key pasted from somewhere) is refused when the provider opens, not sent."""
    lines = []
    for name, value in headers.items():
        if any(c in name for c in "\r\n:") or not name or "\r" in value or "\n" in value:
            raise ValueError(
                f"The header {name!r} has a character that cannot be sent (a newline, or ':' in its name)."
            )
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class Client:
    """POSTs over pooled HTTP/1.1 connections (plain or TLS), at most `limit` per origin."""

    def __init__(
        self,
        limit: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keep_alive_s: float = KEEP_ALIVE_S,
        resolver: Resolver | None = None,
    ) -> None:
        self.limit = limit
        self.keep_alive_s = keep_alive_s
        self.resolver = resolver or Resolver()
        self._ssl_context = ssl_context
        self._pools: dict[Origin, Pool] = {}
        self._targets: dict[str, Target] = {}
        self.closed = False

    async def post(
        self, url: str, headers: bytes, body: bytes, timeouts: Timeouts, timing: ConnectTiming | None = None
    ) -> Response:
        """POST `body` with `headers` (header_block's bytes, each line ending in CRLF; Host and Content-Length are
        added); the answer once its head is in. Raises only ClientError."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        pool = target.pool
        connection = pool.idle_one()
        if connection is None:
            connection = await pool.connect(timeouts, timing)
        head = b"%s%scontent-length: %d\r\n\r\n" % (target.line, headers, len(body))
        try:
            connection.send(head, body, timeouts.first_byte_s, timeouts.total_s)
            while not connection.head_done:  # connection.head(), inlined: one coroutine less a call
                if connection.error is not None:
                    raise connection.error
                await connection.wait()
        except (ServerDisconnectedError, ClientOSError):
            stale = connection.served > 0 and not connection.got_bytes
            pool.release(connection, False)
            if not stale:
                raise
            connection = await pool.connect(timeouts, timing)
            try:
                connection.send(head, body, timeouts.first_byte_s, timeouts.total_s)
                await connection.head()
            except BaseException:
                pool.release(connection, False)
                raise
        except BaseException:
            pool.release(connection, False)
            raise
        return Response(pool, connection)

    async def close(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._targets.clear()

    def _target(self, url: str) -> Target:
        if self.closed:
            raise ConnectError("The upstream client is closed.")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConnectError(f"Cannot call {url!r}: only http:// and https:// URLs with a host.")
        port = parts.port or _DEFAULT_PORTS[scheme]
        origin = Origin(scheme, parts.hostname, port)
        pool = self._pools.get(origin)
        if pool is None:
            tls = (self._ssl_context or default_ssl_context()) if scheme == "https" else None
            pool = self._pools[origin] = Pool(origin, self.limit, self.resolver, tls, self.keep_alive_s)
        # What yarl did for aiohttp: a path or query with characters a request line cannot carry gets them
        # percent-encoded; one already encoded stays as it is.
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
        host = parts.hostname if port == _DEFAULT_PORTS[scheme] else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # an IPv6 address
            host = f"[{parts.hostname}]" if port == _DEFAULT_PORTS[scheme] else f"[{parts.hostname}]:{port}"
        line = f"POST {path}{'?' + query if query else ''} HTTP/1.1\r\nhost: {host}\r\n".encode("ascii")
        if len(self._targets) >= _TARGETS_KEPT:
            self._targets.clear()
        target = self._targets[url] = Target(pool, line)
        return target


_DEFAULT_SSL: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The system's trusted certificates, hostname checked (SNI sent): as aiohttp's default. Made once: loading the
    CA bundle costs milliseconds."""
    global _DEFAULT_SSL
    if _DEFAULT_SSL is None:
        _DEFAULT_SSL = ssl.create_default_context()
    return _DEFAULT_SSL
