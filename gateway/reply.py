"""Reply: what goes back to the client, whole or streamed. A value of the request's layer, beside its context:
filters, the router and the providers make and pass it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway.errors import GatewayError


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a whole JSON body, or a stream of SSE data payloads."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Each item is one SSE `data:` payload (a JSON chunk in OpenAI's format); the relay frames it.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def from_error(cls, exc: GatewayError) -> Reply:
        return cls(status=exc.status_code, body=exc.to_json(), headers=dict(exc.headers))
