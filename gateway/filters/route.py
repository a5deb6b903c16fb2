"""route: the terminal stage. The router picks a deployment of the requested model's group (strategy, health,
constraints), calls its provider with retries and fallbacks, and answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.context import RequestContext
from gateway.errors import NoDeploymentAvailable, PolicyDenied
from gateway.filters.base import Stage
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.routing.router import Router


class RouteFilter(Stage):
    name = "route"
    terminal = True
    settles_now = True

    def __init__(self, router: Router) -> None:
        self.router = router

    @classmethod
    def build(cls, components: Components) -> RouteFilter:
        return cls(components.router)

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        try:
            return await self.router.send(ctx)
        except NoDeploymentAvailable:
            decision = ctx.policy
            if decision is None or decision.route_constraints() is None:
                raise
            # A compliance constraint (EU data stays in the EU) is not an outage to wait out: say which policy
            # kept the request from going anywhere else.
            raise PolicyDenied(
                f"No deployment of `{ctx.model}` that policy {', '.join(decision.matched)} allows "
                f"({_describe(ctx)}) is available now; the request was not sent elsewhere.",
                policy=",".join(decision.matched),
                code="no_compliant_deployment",
            ) from None

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        self.router.finished(ctx)


def _describe(ctx: RequestContext) -> str:
    c = ctx.constraints
    if c is None:
        return "no constraint"
    parts = [f"{what}: {', '.join(sorted(values))}" for what, values in
             (("regions", c.regions), ("providers", c.providers), ("tags", c.tags)) if values]  # fmt: skip
    return "; ".join(parts)
