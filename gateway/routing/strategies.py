"""How a deployment is chosen among the healthy ones of a group. Each strategy returns its pick and the reason,
which goes into the request's record and the x-gateway-route header."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

from gateway.context import RequestContext
from gateway.routing.health import DeploymentHealth
from gateway.telemetry.pricing import PriceTable

Candidates = Sequence[DeploymentHealth]
# A share of lowest-latency picks explores at random, so that a deployment that was slow once is measured again.
EXPLORE = 0.05
DEFAULT_COMPLETION_TOKENS = 256

_round_robin: dict[int, itertools.count[int]] = {}


def weighted(candidates: Candidates, ctx: RequestContext) -> tuple[DeploymentHealth, str]:
    if len(candidates) == 1:
        return candidates[0], "only"
    weights = [c.deployment.weight for c in candidates]
    if not any(weights):
        return random.choice(candidates), "weighted"
    return random.choices(candidates, weights=weights)[0], "weighted"


def round_robin(candidates: Candidates, ctx: RequestContext) -> tuple[DeploymentHealth, str]:
    counter = _round_robin.setdefault(id(ctx.group), itertools.count())
    return candidates[next(counter) % len(candidates)], "round-robin"


def least_in_flight(candidates: Candidates, ctx: RequestContext) -> tuple[DeploymentHealth, str]:
    fewest = min(c.in_flight for c in candidates)
    return random.choice([c for c in candidates if c.in_flight == fewest]), f"least-in-flight={fewest}"


def lowest_latency(candidates: Candidates, ctx: RequestContext) -> tuple[DeploymentHealth, str]:
    def measure(c: DeploymentHealth) -> float:
        return c.ttft_s if ctx.stream and c.ttft_s else c.latency_s

    unmeasured = [c for c in candidates if not measure(c)]
    if unmeasured:
        return random.choice(unmeasured), "lowest-latency:unmeasured"
    if random.random() < EXPLORE:
        return random.choice(candidates), "lowest-latency:explore"
    best = min(candidates, key=measure)
    return best, f"lowest-latency={measure(best) * 1000:.1f}ms"


def lowest_cost(prices: PriceTable) -> Callable[[Candidates, RequestContext], tuple[DeploymentHealth, str]]:
    def pick(candidates: Candidates, ctx: RequestContext) -> tuple[DeploymentHealth, str]:
        # The same token estimate for every candidate: only the prices' ordering matters, so a cheap estimate
        # (four bytes a token) does as well as tiktoken here.
        prompt = len(ctx.raw_body) / 4
        limit = ctx.body.get("max_completion_tokens") or ctx.body.get("max_tokens")
        completion = limit if isinstance(limit, int) and limit > 0 else DEFAULT_COMPLETION_TOKENS

        def cost(c: DeploymentHealth) -> float:
            price = c.deployment.price or prices.price_for(c.deployment.model)
            if price is None:
                return float("inf")
            return price.input * prompt + price.output * completion

        cheapest = min(cost(c) for c in candidates)
        best = random.choice([c for c in candidates if cost(c) == cheapest])
        return best, f"lowest-cost=${cheapest / 1e6:.6f}" if cheapest != float("inf") else "lowest-cost:unpriced"

    return pick
