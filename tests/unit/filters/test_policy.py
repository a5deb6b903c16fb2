"""policy without a gateway: real policies from YAML in a fake registry, a counting fake token counter."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.context import Principal, RouteConstraints
from gateway.errors import PolicyDenied
from gateway.filters.policy import PolicyFilter
from gateway.policy import PolicySet, parse_policies
from gateway.telemetry.metrics import Metrics
from tests.unit.filters.helpers import chat, make_ctx


class Tokens:
    def __init__(self, count: int) -> None:
        self.count = count
        self.asked = 0

    def count_prompt(self, endpoint: str, model: str, body: object) -> int:
        self.asked += 1
        return self.count


def policy_filter(text: str, tokens: int = 10) -> tuple[PolicyFilter, Tokens, CollectorRegistry]:
    policies = PolicySet(parse_policies(textwrap.dedent(text), "test.yaml")) if text else PolicySet()
    metrics = Metrics()  # its registry flushes the filter's batched counters when read
    counter = Tokens(tokens)
    filt = PolicyFilter(SimpleNamespace(current=policies), counter, metrics)  # type: ignore[arg-type]
    return filt, counter, metrics.registry


def decisions(registry: CollectorRegistry, policy: str, outcome: str) -> Any:
    return registry.get_sample_value("gateway_policy_decisions_total", {"policy": policy, "outcome": outcome})


FREE = Principal(name="app", project="p1", metadata={"plan": "free", "region": "eu"})


@pytest.mark.anyio
async def test_no_policy_costs_nothing_and_changes_nothing():
    filt, tokens, _ = policy_filter("")
    ctx = make_ctx(principal=FREE)
    assert await filt.on_request(ctx) is None
    assert ctx.policy is None
    assert tokens.asked == 0


@pytest.mark.anyio
async def test_deny_refuses_with_the_policy_s_status_and_code_and_counts_it():
    filt, tokens, registry = policy_filter("""
        policies:
          - name: prompt-cap
            match: {plan: free, tokens: {gt: 100}}
            actions:
              deny: {status: 400, code: prompt_too_long, message: "Too long."}
    """, tokens=500)  # fmt: skip
    ctx = make_ctx(principal=FREE)
    with pytest.raises(PolicyDenied) as info:
        await filt.on_request(ctx)
    assert (info.value.status_code, info.value.code, info.value.message) == (400, "prompt_too_long", "Too long.")
    assert tokens.asked == 1  # a token condition counts the prompt, once
    assert ctx.policy is not None
    assert ctx.tags["policies"] == "prompt-cap"
    assert decisions(registry, "prompt-cap", "deny") == 1
    short, _, _ = policy_filter("""
        policies:
          - name: prompt-cap
            match: {plan: free, tokens: {gt: 100}}
            actions: {deny: {status: 400, code: prompt_too_long, message: "Too long."}}
    """, tokens=50)  # fmt: skip
    assert await short.on_request(make_ctx(principal=FREE)) is None


@pytest.mark.anyio
async def test_a_forced_model_and_a_rewrite_change_the_body_and_keep_the_original_model_in_the_record():
    filt, _, registry = policy_filter("""
        policies:
          - name: free-plan-small-model
            match: {plan: free, model: gpt-4o}
            actions:
              route: {model: gpt-4o-mini}
              rewrite: {max_tokens: 64}
              tag: {tier: free}
    """)  # fmt: skip
    ctx = make_ctx(chat("hi", model="gpt-4o", max_tokens=4000), principal=FREE)
    assert await filt.on_request(ctx) is None
    assert ctx.model == "gpt-4o-mini"
    assert ctx.body["model"] == "gpt-4o-mini"
    assert ctx.body["max_tokens"] == 64
    assert ctx.body_changed
    assert ctx.tags["model_original"] == "gpt-4o"
    assert ctx.tags["tier"] == "free"
    assert decisions(registry, "free-plan-small-model", "applied") == 1
    other = make_ctx(chat("hi", model="demo"), principal=FREE)
    assert await filt.on_request(other) is None
    assert not other.body_changed


@pytest.mark.anyio
async def test_route_constraints_intersect_with_those_already_set():
    filt, _, _ = policy_filter("""
        policies:
          - name: eu-residency
            match: {region: eu}
            actions: {route: {regions: [eu, eu-west]}}
    """)  # fmt: skip
    ctx = make_ctx(principal=FREE)
    await filt.on_request(ctx)
    assert ctx.constraints == RouteConstraints(regions=frozenset({"eu", "eu-west"}))
    narrowed = make_ctx(principal=FREE)
    narrowed.constraints = RouteConstraints(regions=frozenset({"eu-west", "us"}), tags=frozenset({"gpu"}))
    await filt.on_request(narrowed)
    assert narrowed.constraints == RouteConstraints(regions=frozenset({"eu-west"}), tags=frozenset({"gpu"}))
    disjoint = make_ctx(principal=FREE)
    disjoint.constraints = RouteConstraints(regions=frozenset({"us"}))
    with pytest.raises(PolicyDenied) as info:
        await filt.on_request(disjoint)
    assert info.value.code == "no_deployment_allowed"


@pytest.mark.anyio
async def test_a_shadow_policy_is_recorded_and_never_acts():
    filt, _, registry = policy_filter("""
        policies:
          - name: would-deny
            mode: shadow
            match: {plan: free}
            actions: {deny: {status: 403, code: nope, message: "No."}}
    """)  # fmt: skip
    ctx = make_ctx(principal=FREE)
    assert await filt.on_request(ctx) is None
    assert ctx.tags["policies_shadow"] == "would-deny"
    assert decisions(registry, "would-deny", "shadow") == 1


CAP = """
    policies:
      - name: free-cap
        match: {plan: free, tokens: {gt: 100}}
        actions:
          deny: {status: 400, code: prompt_too_long, message: "Too long."}
      - name: free-tag
        match: {plan: free}
        actions:
          tag: {tier: free}
"""


@pytest.mark.anyio
async def test_a_decision_kept_by_its_facts_follows_the_key_s_metadata_and_model():
    filt, tokens, _ = policy_filter(CAP, tokens=500)
    pro = Principal(name="app", project="p1", metadata={"plan": "pro"})
    for _ in range(2):  # the second request reuses the first's decision: the same facts, no tokens read
        ctx = make_ctx(principal=pro)
        await filt.on_request(ctx)
        assert ctx.policy is None
    assert tokens.asked == 0
    pro.metadata["plan"] = "free"  # the same key, now on the free plan: decided again, and the cap applies
    with pytest.raises(PolicyDenied):
        await filt.on_request(make_ctx(principal=pro))
    assert tokens.asked == 1


@pytest.mark.anyio
async def test_a_decision_that_read_the_tokens_is_not_kept():
    filt, tokens, _ = policy_filter(CAP, tokens=10)
    for i in range(3):
        ctx = make_ctx(principal=FREE)
        await filt.on_request(ctx)
        assert ctx.tags["tier"] == "free"
        assert tokens.asked == i + 1  # every prompt counted: its own tokens decide
    tokens.count = 500
    with pytest.raises(PolicyDenied):
        await filt.on_request(make_ctx(principal=FREE))


@pytest.mark.anyio
async def test_a_reloaded_policy_set_decides_afresh():
    filt, _, _ = policy_filter("""
        policies:
          - name: tag-p1
            match: {project: p1}
            actions:
              tag: {seen: "yes"}
    """)  # fmt: skip
    ctx = make_ctx(principal=FREE)
    await filt.on_request(ctx)
    assert ctx.tags["seen"] == "yes"
    filt.registry.current = PolicySet(
        parse_policies(
            "policies:\n  - name: other\n    match: {project: p2}\n    actions:\n      tag: {seen: 'no'}\n", "t.yaml"
        )
    )  # type: ignore[misc]
    ctx = make_ctx(principal=FREE)
    await filt.on_request(ctx)
    assert ctx.policy is None
    assert "seen" not in ctx.tags
