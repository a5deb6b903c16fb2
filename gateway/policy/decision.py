"""What the policies decided for one request: the combined actions of every enforce policy that matched, and how
explain saw each policy.

The decision's types live in the leaf gateway/decision.py (the request context carries one); they are re-exported
here. `NO_DECISION` is the one value for "no policy matched": the filter tests `decision is NO_DECISION` and skips
all policy work for the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.decision import (
    NO_DECISION,
    NO_LIMIT,
    NO_REWRITE,
    Decision,
    GuardrailSpec,
    RewritePlan,
    ShadowOutcome,
)

__all__ = [
    "NO_DECISION",
    "NO_LIMIT",
    "NO_REWRITE",
    "Decision",
    "Explanation",
    "GuardrailSpec",
    "RewritePlan",
    "ShadowOutcome",
    "Step",
]


@dataclass(frozen=True, slots=True)
class Step:
    """One policy as explain saw it: matched or not, and why not."""

    policy: str
    mode: str
    priority: int
    matched: bool
    reason: str  # why it did not match, or what became of its actions when it did
    location: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "mode": self.mode,
            "priority": self.priority,
            "matched": self.matched,
            "reason": self.reason,
            "location": self.location,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    steps: tuple[Step, ...]
    decision: Decision

    def lines(self) -> list[str]:
        out = []
        for step in self.steps:
            verdict = "MATCH" if step.matched else "skip " if step.mode == "off" else "no   "
            out.append(f"{verdict} {step.policy} [{step.mode}, priority {step.priority}]: {step.reason}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "decision": self.decision.to_dict()}
