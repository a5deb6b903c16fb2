"""Reply: what goes back to the client, whole or streamed. A value of the request's layer, beside its context:
filters, the router and the providers make and pass it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import GatewayError


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a whole JSON body, or a stream of SSE data payloads."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Each item is one SSE `data:` payload (a JSON chunk in OpenAI's format); the relay frames it.
    stream: AsyncIterator[bytes] | None = None
    # (the body, its JSON object) when the provider decoded it: an ingress that reads the answer need not decode
    # it again (see decoded()).
    decoded_body: tuple[bytes, dict[str, Any]] | None = None

    def decoded(self) -> Any:
        """The body's JSON (whatever it holds); orjson.JSONDecodeError when it is not JSON. The provider's decoding
        serves as long as the body is still the bytes it decoded: a filter that replaced it is read anew."""
        known = self.decoded_body
        if known is not None and known[0] is self.body:
            return known[1]
        return orjson.loads(self.body)

    @classmethod
    def from_error(cls, exc: GatewayError) -> Reply:
        return cls(status=exc.status_code, body=exc.to_json(), headers=dict(exc.headers))
