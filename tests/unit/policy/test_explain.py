"""explain(): every policy in order, matched or not and why, and the same decision evaluate() gives."""

from __future__ import annotations

import pytest

from gateway.policy import NO_DECISION, Facts
from tests.unit.policy.helpers import of, policy_set

POLICIES = """\
policies:
  - name: free-plan
    priority: 100
    match: {plan: free, tokens: {gt: 4000}}
    actions: {route: {model: small}}
  - name: acme-only
    priority: 90
    when:
      all:
        - {field: metadata.customer, regex: "^acme-"}
        - any:
            - {field: tokens, gte: 1000}
            - not: {field: role, in: [admin]}
    actions: {tag: {customer: acme}}
  - name: retired
    priority: 80
    mode: off
    actions: {deny: {}}
  - name: watch
    mode: shadow
    match: {stream: true}
    actions: {deny: {}}
  - name: gold
    match: {metadata: {tier: gold}}
    actions: {route: {model: big}}
"""


@pytest.fixture
def policies():
    return policy_set(POLICIES)


def reasons(policies, **facts):
    return {s.policy: s.reason for s in policies.explain(Facts(**facts)).steps}


def test_each_reason_names_the_failing_field_expected_and_actual(policies):
    got = reasons(policies, plan="pro", tokens=5000, role="admin", metadata={"customer": "beta-1"})
    assert got == {
        "free-plan": 'match.plan: "pro" is not one of ["free"]',
        "acme-only": 'when.all[0]: metadata.customer "beta-1" does not match regex "^acme-"',
        "retired": "mode off: skipped",
        "watch": "match.stream: false is not true",
        "gold": 'match.metadata.tier: (absent) is not one of ["gold"]',
    }


def test_comparison_any_and_not_reasons(policies):
    got = reasons(policies, plan="free", tokens=1200, role="admin", metadata={"customer": "acme-2"})
    assert got["free-plan"] == "match.tokens: 1200 is not > 4000"
    got = reasons(policies, plan="free", tokens=10, role="admin", metadata={"customer": "acme-2"})
    assert got["acme-only"] == (
        "when.all[1]: none of the 2 alternatives holds (when.all[1].any[0]: tokens 10 is not >= 1000; "
        'when.all[1].any[1]: the negated condition holds (role is "admin"))'
    )


def test_matched_policies_say_what_became_of_their_actions(policies):
    explanation = policies.explain(
        Facts(plan="free", tokens=5000, stream=True, role="developer", metadata={"customer": "acme-1", "tier": "gold"})
    )
    assert [(s.policy, s.matched, s.reason) for s in explanation.steps] == [
        ("free-plan", True, "matched; applied"),
        ("acme-only", True, "matched; applied"),
        ("retired", False, "mode off: skipped"),
        ("gold", True, "matched; applied (gold: route.model 'big' overridden by free-plan)"),
        ("watch", True, "matched; shadow: actions recorded, not applied"),  # same priority as gold: by name
    ]
    assert explanation.lines()[0] == "MATCH free-plan [enforce, priority 100]: matched; applied"
    assert explanation.lines()[2] == "skip  retired [off, priority 80]: mode off: skipped"
    assert explanation.steps[0].location == "test.yaml:2"


def test_deny_notes():
    policies = of(
        {"name": "a", "priority": 3, "actions": {"tag": {"k": "v"}}},
        {"name": "b", "priority": 2, "actions": {"deny": {"status": 429, "code": "slow_down"}}},
        {"name": "c", "priority": 1, "actions": {"route": {"model": "x"}}},
    )
    notes = [s.reason for s in policies.explain(Facts()).steps]
    assert notes == [
        "matched; only its labels kept: denied by b",
        "matched; denies (429 slow_down)",
        "matched; actions not applied: denied by b",
    ]


@pytest.mark.parametrize(
    "facts",
    [
        {},
        {"plan": "free", "tokens": 5000},
        {"stream": True},
        {"metadata": {"customer": "acme-1", "tier": "gold"}, "tokens": 2000, "role": "admin"},
    ],
)
def test_explain_gives_the_decision_evaluate_gives(policies, facts):
    decision = policies.evaluate(Facts(**facts))
    explained = policies.explain(Facts(**facts)).decision
    assert explained == decision
    assert (explained is NO_DECISION) == (decision is NO_DECISION)


def test_to_dict(policies):
    data = policies.explain(Facts(plan="pro")).to_dict()
    assert [s["policy"] for s in data["steps"]] == ["free-plan", "acme-only", "retired", "gold", "watch"]
    assert data["steps"][0] == {
        "policy": "free-plan",
        "mode": "enforce",
        "priority": 100,
        "matched": False,
        "reason": 'match.plan: "pro" is not one of ["free"]',
        "location": "test.yaml:2",
    }
    assert data["decision"]["decision"] == "allow"
