"""route without a gateway: a fake router."""

from __future__ import annotations

import pytest

from gateway.context import RequestContext, RouteConstraints
from gateway.errors import NoDeploymentAvailable, PolicyDenied
from gateway.filters.route import RouteFilter
from gateway.pipeline import Reply
from gateway.policy.decision import Decision
from tests.unit.filters.helpers import make_ctx


class Router:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[RequestContext] = []
        self.finished_for: list[RequestContext] = []

    async def send(self, ctx: RequestContext) -> Reply:
        self.sent.append(ctx)
        if self.fail:
            raise NoDeploymentAvailable("No deployment is available.")
        return Reply(status=200, body=b"{}")

    def finished(self, ctx: RequestContext) -> None:
        self.finished_for.append(ctx)


@pytest.mark.anyio
async def test_route_answers_with_the_router_s_reply_and_settles_it_after():
    router = Router()
    route = RouteFilter(router)
    ctx = make_ctx()
    reply = await route.on_request(ctx)
    assert reply is not None
    assert reply.status == 200
    assert router.sent == [ctx]
    assert await route.on_response(ctx, reply) is None
    assert router.finished_for == [ctx]


@pytest.mark.anyio
async def test_no_deployment_is_an_outage_when_no_policy_constrained_the_route():
    route = RouteFilter(Router(fail=True))
    with pytest.raises(NoDeploymentAvailable):
        await route.on_request(make_ctx())
    ctx = make_ctx()
    ctx.policy = Decision(matched=("tagger",))  # a policy matched, but set no route constraint
    with pytest.raises(NoDeploymentAvailable):
        await route.on_request(ctx)


@pytest.mark.anyio
async def test_no_deployment_a_policy_allows_is_a_policy_refusal_that_names_it():
    ctx = make_ctx()
    ctx.policy = Decision(matched=("eu-residency",), regions=frozenset({"eu"}))
    ctx.constraints = RouteConstraints(regions=frozenset({"eu"}))
    with pytest.raises(PolicyDenied) as info:
        await RouteFilter(Router(fail=True)).on_request(ctx)
    assert info.value.code == "no_compliant_deployment"
    assert "eu-residency" in info.value.message
    assert "regions: eu" in info.value.message
