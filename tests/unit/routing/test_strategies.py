from __future__ import annotations

import collections

from gateway.config import Deployment, ModelGroup, Price, RoutingConfig
from gateway.context import RequestContext
from gateway.routing import strategies
from gateway.routing.health import DeploymentHealth
from gateway.telemetry.pricing import PriceTable


def health(model: str, **options) -> DeploymentHealth:
    return DeploymentHealth(Deployment(provider="p", model=model, **options), RoutingConfig())


def ctx(stream: bool = False, body: bytes = b"{}") -> RequestContext:
    c = RequestContext(request_id="r", endpoint="chat/completions", headers=[], raw_body=body,
                       body={"stream": stream, "max_tokens": 100})  # fmt: skip
    c.group = ModelGroup(deployments=[])
    return c


def picks(pick, candidates, n=4000, **kw) -> collections.Counter[str]:
    return collections.Counter(pick(candidates, ctx(**kw))[0].deployment.model for _ in range(n))


def test_weighted_follows_the_weights_within_tolerance():
    counts = picks(strategies.weighted, [health("a", weight=3), health("b", weight=1)])
    assert 0.72 < counts["a"] / 4000 < 0.78


def test_round_robin_cycles():
    candidates = [health("a"), health("b"), health("c")]
    c = ctx()
    order = [strategies.round_robin(candidates, c)[0].deployment.model for _ in range(6)]
    assert order[:3] == order[3:]
    assert sorted(order[:3]) == ["a", "b", "c"]


def test_least_in_flight():
    busy, idle = health("busy"), health("idle")
    busy.in_flight = 3
    assert set(picks(strategies.least_in_flight, [busy, idle], n=50)) == {"idle"}


def test_lowest_latency_prefers_the_faster_and_explores_a_little():
    fast, slow = health("fast"), health("slow")
    fast.latency_s, slow.latency_s = 0.05, 0.5
    counts = picks(strategies.lowest_latency, [fast, slow])
    assert counts["fast"] / 4000 > 0.95
    assert counts["slow"] > 0  # exploration keeps measuring it


def test_lowest_latency_uses_time_to_first_token_for_streams_and_tries_unmeasured_first():
    a, b = health("a"), health("b")
    a.latency_s, a.ttft_s = 0.1, 0.9
    b.latency_s, b.ttft_s = 0.5, 0.2
    assert picks(strategies.lowest_latency, [a, b], stream=True).most_common(1)[0][0] == "b"
    assert picks(strategies.lowest_latency, [a, b]).most_common(1)[0][0] == "a"
    new = health("new")
    assert set(picks(strategies.lowest_latency, [a, new], n=20)) == {"new"}


def test_lowest_cost_prefers_the_cheaper_and_an_override_beats_the_table():
    table = PriceTable({"gpt-4o": Price(input=2.5, output=10), "gpt-4o-mini": Price(input=0.15, output=0.6)})
    pick = strategies.lowest_cost(table)
    assert set(picks(pick, [health("gpt-4o"), health("gpt-4o-mini")], n=20)) == {"gpt-4o-mini"}
    discounted = health("gpt-4o", price=Price(input=0.01, output=0.01))
    assert set(picks(pick, [discounted, health("gpt-4o-mini")], n=20)) == {"gpt-4o"}
    assert set(picks(pick, [health("unknown"), health("gpt-4o")], n=20)) == {"gpt-4o"}
