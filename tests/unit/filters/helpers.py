"""Builders for the filter tests: a request context as an endpoint makes it, without a gateway."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import ANONYMOUS, Principal, RequestContext


def make_ctx(
    body: dict[str, Any] | None = None,
    *,
    endpoint: str = "chat/completions",
    principal: Principal = ANONYMOUS,
    headers: list[tuple[bytes, bytes]] | None = None,
    client_ip: str = "10.0.0.1",
) -> RequestContext:
    body = body if body is not None else chat("hello")
    ctx = RequestContext(
        request_id="r1",
        endpoint=endpoint,
        headers=headers or [],
        raw_body=orjson.dumps(body),
        body=body,
        client_ip=client_ip,
    )
    ctx.principal = principal
    return ctx


def chat(text: str, model: str = "demo", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def key(name: str = "app", **fields: Any) -> Principal:
    """A caller identified by a virtual key (source virtual), its own limits in `fields`."""
    return Principal(name=name, key_id=f"id-{name}", source="virtual", **fields)
