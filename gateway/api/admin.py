"""Admin endpoints for deployments: list them with their health, drain, undrain, reset a breaker.

    GET  /admin/deployments
    POST /admin/deployments/{id}/drain | /undrain | /reset       (id: provider/model, as the list shows it)

Who may call them is gateway/roles.py's matrix (viewers may list), whatever the auth mode.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from gateway.api.access import authorize
from gateway.api.http import JSON_TYPE, encode_headers, request_id_of, send_json
from gateway.errors import GatewayError, NotFound
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
            await authorize(self.gateway, scope, self._route(scope))
            body = await self._handle(scope)
        except GatewayError as exc:
            await send_json(send, exc.status_code, exc.to_json(), headers + encode_headers(exc.headers))
            return
        await send_json(send, 200, body, headers)

    @staticmethod
    def _route(scope: Scope) -> str:
        if scope["method"] == "GET":
            return "GET /admin/deployments"
        return "POST /admin/deployments/{id}/{action}"

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
