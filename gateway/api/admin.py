"""Admin endpoints for deployments: list them with their health, drain, undrain, reset a breaker.

    GET  /admin/deployments
    POST /admin/deployments/{id}/drain | /undrain | /reset       (id: provider/model, as the list shows it)

Only a key with the admin role may call them, whatever the auth mode.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from gateway.api.http import JSON_TYPE, encode_headers, request_id_of, send_json
from gateway.context import RequestContext
from gateway.errors import GatewayError, NotFound, PermissionDenied
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway

ACTIONS = ("drain", "undrain", "reset")


class DeploymentsEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        headers = [JSON_TYPE, (b"x-request-id", request_id.encode())]
        try:
            await self._require_admin(scope, request_id)
            body = await self._handle(scope)
        except GatewayError as exc:
            await send_json(send, exc.status_code, exc.to_json(), headers + encode_headers(exc.headers))
            return
        await send_json(send, 200, body, headers)

    async def _require_admin(self, scope: Scope, request_id: str) -> None:
        ctx = RequestContext(request_id=request_id, endpoint="admin", headers=scope["headers"], raw_body=b"", body={})
        auth = self.gateway.auth
        principal = auth.identify(ctx) if auth is not None else None
        if principal is None or principal.role != "admin":
            raise PermissionDenied("This endpoint needs a key with the admin role.")

    async def _handle(self, scope: Scope) -> bytes:
        health = self.gateway.health
        now = time.monotonic()
        params = scope.get("path_params", {})
        deployment_id, action = params.get("deployment_id"), params.get("action")
        if deployment_id is None:
            groups: dict[str, list[str]] = {}
            for name, group in self.gateway.models.items():
                for d in group.deployments:
                    groups.setdefault(d.id, []).append(name)
            data = [{**h.snapshot(now), "models": groups.get(i, [])} for i, h in health.deployments.items()]
            return orjson.dumps({"object": "list", "data": data})
        if deployment_id not in health.deployments or action not in ACTIONS:
            raise NotFound(f"No deployment {deployment_id!r} (see GET /admin/deployments).")
        if action == "reset":
            await health.reset(deployment_id)
        else:
            await health.drain(deployment_id, action == "drain")
        return orjson.dumps(health.deployments[deployment_id].snapshot(now))
