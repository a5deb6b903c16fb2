"""The policy language: YAML rules that match requests by their facts and deny, route, rewrite, limit, guard or
tag them. Load with `load_policies`, evaluate with `PolicySet.evaluate`, apply a rewrite with `apply_rewrite`.
"""

from __future__ import annotations

from gateway.policy.decision import (
    NO_DECISION,
    Decision,
    Explanation,
    GuardrailSpec,
    RewritePlan,
    ShadowOutcome,
    Step,
)
from gateway.policy.evaluate import PolicySet, combine
from gateway.policy.facts import Facts, request_metadata
from gateway.policy.loader import load_policies, parse_policies
from gateway.policy.model import Actions, Deny, Guardrail, Limit, Policy, Rewrite, Route
from gateway.policy.problems import PolicyError, Problem
from gateway.policy.rewrite import apply_rewrite
from gateway.policy.testing import CaseResult, run_tests

__all__ = [
    "NO_DECISION",
    "Actions",
    "CaseResult",
    "Decision",
    "Deny",
    "Explanation",
    "Facts",
    "Guardrail",
    "GuardrailSpec",
    "Limit",
    "Policy",
    "PolicyError",
    "PolicySet",
    "Problem",
    "Rewrite",
    "RewritePlan",
    "Route",
    "ShadowOutcome",
    "Step",
    "apply_rewrite",
    "combine",
    "load_policies",
    "parse_policies",
    "request_metadata",
    "run_tests",
]
