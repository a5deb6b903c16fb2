"""What the upstream client raises, and nothing else (OSErrors and parser errors are translated where they happen):

    ClientError                  every failure of an upstream exchange
    ├── ConnectError             no connection: the name unresolved, refused, unreachable, the TLS handshake refused
    ├── ConnectTimeout           no connection (a pool slot, DNS, TCP, TLS) within Timeouts.connect_s
    ├── ReadTimeout              no byte within Timeouts.first_byte_s of a read, or past Timeouts.total_s
    ├── ServerDisconnectedError  the connection closed before the answer's head was whole
    ├── ClientOSError            the connection failed (reset) before the answer's head was whole
    ├── ClientPayloadError       the body ended short (its length, its chunks), or it cannot be decoded
    └── ClientResponseError      not an HTTP/1.1 answer: a garbage status line, a head past MAX_HEAD_BYTES

providers/base.py's transport_error maps them to the gateway's errors as it mapped aiohttp's. The last four keep
the names aiohttp gave the same failures: the message a client sees names the class ("The connection to the
upstream provider 'x' failed: ClientPayloadError."), and it reads as it did. The timeouts are TimeoutErrors.
"""

from __future__ import annotations


class ClientError(Exception):
    """Every failure of an upstream exchange."""


class ConnectError(ClientError):
    """No connection could be made: the name does not resolve, every address refused or was unreachable, or the
    TLS handshake failed (an unknown or expired certificate, a name that does not match)."""


class ConnectTimeout(ClientError, TimeoutError):
    """No connection within the connect timeout: waiting for a slot in a full pool, resolving, connecting, TLS."""


class ReadTimeout(ClientError, TimeoutError):
    """No byte of the answer within the per-read timeout, or the exchange went past its total timeout."""


class ServerDisconnectedError(ClientError):
    """The server closed the connection before the answer's head was whole."""


class ClientOSError(ClientError, OSError):
    """The connection failed (reset, broken) before the answer's head was whole."""


class ClientPayloadError(ClientError):
    """The answer's body ended before its length or its last chunk, or its content-encoding cannot be decoded."""


class ClientResponseError(ClientError):
    """The answer is not HTTP/1.x: a status line or header the parser refuses, or a head too large."""
