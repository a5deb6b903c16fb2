"""/health/live (the process answers) and /health/ready (this replica can serve: not draining, a usable
configuration, a deployment available; the store's, state backend's and sinks' states reported, never a reason for
a 503: see gateway/readiness.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from gateway.api.http import JSON_TYPE, send_json
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway


class Live:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, b'{"status":"ok"}', [JSON_TYPE])


class Ready:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready, checks = await self.gateway.readiness()
        body = orjson.dumps({"status": "ok" if ready else "unavailable", "checks": checks})
        await send_json(send, 200 if ready else 503, body, [JSON_TYPE])


class MetricsEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.gateway.metrics.queue_depth.set(len(self.gateway.queue))
        self.gateway.ready.report()  # gateway_ready and gateway_component_state as of now
        body, content_type = self.gateway.metrics.render()
        await send_json(send, 200, body, [(b"content-type", content_type.encode())])
