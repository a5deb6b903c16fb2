"""route: the terminal stage. Model name -> model group -> a deployment, then the provider's call.

Today a group's deployment is picked by weight; the routing issue grows this into strategies, retries, fallbacks
and breakers behind the same stage.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.config import Deployment, ModelGroup
from gateway.context import RequestContext
from gateway.errors import ModelNotFound
from gateway.pipeline import Reply

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def pick(group: ModelGroup) -> Deployment:
    deployments = group.deployments
    if len(deployments) == 1:
        return deployments[0]
    return random.choices(deployments, weights=[d.weight for d in deployments])[0]


class RouteFilter:
    name = "route"

    def __init__(self, gateway: Gateway) -> None:
        self.models = gateway.models
        self.providers = gateway.providers
        self.timeouts = gateway.config.routing.timeouts

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        group = self.models.get(ctx.model)
        if group is None:
            raise ModelNotFound(
                f"The model `{ctx.model}` does not exist or you do not have access to it.", param="model"
            )
        ctx.group = group
        deployment = pick(group)
        ctx.deployment = deployment
        ctx.provider = deployment.provider
        return await self.providers[deployment.provider].send(ctx, deployment, deployment.timeouts or self.timeouts)

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        return None
