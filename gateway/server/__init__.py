"""The HTTP server under the app: uvicorn's httptools protocol with its edges bounded (protocol.py); the allocator
settings that give the memory of large requests back are gateway/memory.py's."""

from __future__ import annotations

import functools
from typing import Any

from gateway.config import ServerConfig


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """uvicorn's settings for the edges of a connection (the HTTP protocol and its limits, keep-alive), shared by
    `gateway serve` and the tests' servers."""
    from gateway.server.protocol import BoundedHttpToolsProtocol, EdgeLimits

    return {
        # httptools (C, llhttp) with the edges bounded: h11 caps a head but times nothing and costs far more per
        # request. A partial, not a class made on the fly: it pickles to the workers of --workers.
        "http": functools.partial(BoundedHttpToolsProtocol, limits=EdgeLimits.of(server)),
        "timeout_keep_alive": server.keep_alive_s,
    }
