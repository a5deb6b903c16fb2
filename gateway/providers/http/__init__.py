"""The upstream HTTP client: HTTP/1.1 over asyncio's transports (TLS by the ssl module), answers parsed by httptools
(llhttp, the C parser uvicorn uses), connections pooled per origin and kept alive. It does what the providers need
and nothing more (POST, a body in memory, an answer read whole or as a stream; no redirects, cookies, proxies or
HTTP/2), for a fraction of aiohttp's instructions per call. aiohttp stays for the sinks, off the request path.

client.py     Client.post: the call, and its one retry on a kept-alive connection the server had closed
pool.py       Pool: the connections to one origin, the limit and its queue, keep-alive expiry; Resolver (DNS cache)
connection.py Connection: one connection's protocol, parser callbacks, read timeouts
response.py   Response: status, headers, read(), iteration, release() and close()
errors.py     what it raises
"""

from gateway.providers.http.client import Client, default_ssl_context, header_block
from gateway.providers.http.errors import (
    ClientError,
    ClientOSError,
    ClientPayloadError,
    ClientResponseError,
    ConnectError,
    ConnectTimeout,
    ReadTimeout,
    ServerDisconnectedError,
)
from gateway.providers.http.pool import ConnectTiming, Resolver
from gateway.providers.http.response import Headers, Response

__all__ = [
    "Client",
    "ClientError",
    "ClientOSError",
    "ClientPayloadError",
    "ClientResponseError",
    "ConnectError",
    "ConnectTiming",
    "ConnectTimeout",
    "Headers",
    "ReadTimeout",
    "Resolver",
    "Response",
    "ServerDisconnectedError",
    "default_ssl_context",
    "header_block",
]
