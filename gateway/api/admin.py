"""Admin endpoints for deployments: list them with their health, drain, undrain, reset a breaker.

    GET  /admin/deployments
    POST /admin/deployments/{id}/drain | /undrain | /reset       (id: provider/model, as the list shows it)

Who may call them is gateway/identity/roles.py's matrix (viewers may list), whatever the auth mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.api.access import AdminEndpoint, authorize
from gateway.errors import NotFound, ServiceUnavailable
from gateway.state.base import StateUnavailable
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.runtime import Gateway

ACTIONS = ("drain", "undrain", "reset")


class DeploymentsEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        await authorize(self.gateway, scope, self._route(scope))
        return 200, await self._handle(scope)

    @staticmethod
    def _route(scope: Scope) -> str:
        if scope["method"] == "GET":
            return "GET /admin/deployments"
        return "POST /admin/deployments/{id}/{action}"

    async def _handle(self, scope: Scope) -> dict[str, Any]:
        params = scope.get("path_params", {})
        deployment_id, action = params.get("deployment_id"), params.get("action")
        if deployment_id is None:
            return list_deployments(self.gateway)
        return await act_on_deployment(self.gateway, deployment_id, action)


# What the API and the console do once the role is checked (gateway/identity/roles.py).


def list_deployments(gateway: Gateway) -> dict[str, Any]:
    health = gateway.health
    now = health.clock()
    groups: dict[str, list[str]] = {}
    for name, group in gateway.models.items():
        for d in group.deployments:
            groups.setdefault(d.id, []).append(name)
    data = [{**h.snapshot(now), "models": groups.get(i, [])} for i, h in health.deployments.items()]
    return {"object": "list", "data": data}


async def act_on_deployment(gateway: Gateway, deployment_id: str, action: str | None) -> dict[str, Any]:
    health = gateway.health
    if deployment_id not in health.deployments or action not in ACTIONS:
        raise NotFound(f"No deployment {deployment_id!r} (see GET /admin/deployments).")
    try:
        if action == "reset":
            await health.reset(deployment_id)
        else:
            await health.drain(deployment_id, action == "drain")
    except StateUnavailable as exc:
        # Done here, not shared: behind a load balancer the other replicas keep the deployment as it was (a
        # breaker open until its cooldown ends). A 503 says so and that a retry is safe, not a bare 500.
        raise ServiceUnavailable(
            f"{action} done on this replica only: the state backend that shares it with the others cannot be"
            f" reached ({exc}); try again."
        ) from None
    return health.deployments[deployment_id].snapshot(health.clock())
