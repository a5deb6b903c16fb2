"""route: the terminal stage. The router picks a deployment of the requested model's group (strategy, health,
constraints), calls its provider with retries and fallbacks, and answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.context import RequestContext
from gateway.pipeline import Reply

if TYPE_CHECKING:
    from gateway.runtime import Gateway


class RouteFilter:
    name = "route"

    def __init__(self, gateway: Gateway) -> None:
        self.router = gateway.router

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        return await self.router.send(ctx)

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        self.router.finished(ctx)
        return None
