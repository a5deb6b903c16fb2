"""What was decided for one request, as plain data: the policies' combined decision and the route constraints.

A leaf: it imports nothing of the gateway's, so that the request context (which carries a Decision and the route
constraints), the policy engine (which makes them) and the filters and router (which read them) share the types
without importing one another. The policy's parsed form (gateway/policy/model.py) re-exports Deny and Limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RouteConstraints:
    """Limits on where a request may go; empty means no limit. Constraints from several sources intersect."""

    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()  # a deployment must carry all of these


@dataclass(frozen=True, slots=True)
class Deny:
    status: int = 403
    code: str = "policy_denied"
    message: str = ""
    policy: str = ""


@dataclass(frozen=True, slots=True)
class Limit:
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None

    def items(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("budget_usd", self.budget_usd),
            ("budget_period", self.budget_period),
        )


@dataclass(frozen=True, slots=True)
class RewritePlan:
    max_tokens: int | None = None  # a cap: the smallest any matching policy set
    set: Mapping[str, Any] = field(default_factory=dict)
    strip: frozenset[str] = frozenset()
    system: tuple[str, ...] = ()  # system messages to add, in policy order

    def __bool__(self) -> bool:
        return self.max_tokens is not None or bool(self.set or self.strip or self.system)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "set": dict(self.set),
            "strip": sorted(self.strip),
            "system": list(self.system),
        }


@dataclass(frozen=True, slots=True)
class GuardrailSpec:
    """One guardrail check to run: the settings of the first policy naming it, with the strictest action."""

    name: str
    action: str
    stages: frozenset[str]  # input, output or both
    settings: Mapping[str, Any]
    policy: str  # whose settings these are

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "stages": sorted(self.stages),
            "settings": dict(self.settings),
            "policy": self.policy,
        }


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    """A shadow policy that matched, and what it would have done: recorded, never applied."""

    policy: str
    actions: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "actions": dict(self.actions)}


@dataclass(frozen=True, slots=True)
class CachePlan:
    """A policy's `cache` action: the response cache's mode for the requests it matches, and its settings (None:
    the config's `cache.ttl_s` and `cache.semantic.min_score`, which a policy's min_score may raise, not lower)."""

    mode: str = "exact"  # off | exact | semantic
    ttl_s: float | None = None
    min_score: float | None = None
    policy: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.ttl_s is not None:
            out["ttl_s"] = self.ttl_s
        if self.min_score is not None:
            out["min_score"] = self.min_score
        return out


NO_REWRITE = RewritePlan()
NO_LIMIT = Limit()


@dataclass(frozen=True, slots=True)
class Decision:
    matched: tuple[str, ...] = ()  # enforce policies that matched, in evaluation order
    deny: Deny | None = None
    model: str | None = None  # route.model: the model to serve instead of the one asked for
    model_policy: str | None = None
    regions: frozenset[str] | None = None  # None: unconstrained
    providers: frozenset[str] | None = None
    tags: frozenset[str] = frozenset()  # a deployment must carry all of them
    rewrite: RewritePlan = NO_REWRITE
    limit: Limit = NO_LIMIT
    guardrails: Mapping[str, GuardrailSpec] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    cache: CachePlan | None = None  # the first matching policy's cache action
    shadow: tuple[ShadowOutcome, ...] = ()
    # Actions a higher-priority policy overrode ("b: route.model 'x' overridden by a"), for explain and records.
    overridden: tuple[str, ...] = ()

    @property
    def denied(self) -> bool:
        return self.deny is not None

    def route_constraints(self) -> RouteConstraints | None:
        """The regions, providers and tags as the router takes them, or None when the policies set none."""
        if self.regions is None and self.providers is None and not self.tags:
            return None
        return RouteConstraints(
            regions=self.regions or frozenset(), providers=self.providers or frozenset(), tags=self.tags
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for the admin API, the CLI and the request's record."""
        deny = self.deny
        return {
            "decision": "deny" if deny is not None else "allow",
            "matched": list(self.matched),
            "deny": (
                {"status": deny.status, "code": deny.code, "message": deny.message, "policy": deny.policy}
                if deny is not None
                else None
            ),
            "model": self.model,
            "model_policy": self.model_policy,
            "regions": sorted(self.regions) if self.regions is not None else None,
            "providers": sorted(self.providers) if self.providers is not None else None,
            "tags": sorted(self.tags),
            "rewrite": self.rewrite.to_dict(),
            "limit": {k: v for k, v in self.limit.items() if v is not None},
            "guardrails": {name: spec.to_dict() for name, spec in self.guardrails.items()},
            "labels": dict(self.labels),
            "cache": self.cache.to_dict() if self.cache is not None else None,
            "shadow": [s.to_dict() for s in self.shadow],
            "overridden": list(self.overridden),
        }


NO_DECISION = Decision()
