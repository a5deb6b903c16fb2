"""policy: evaluate the policies in force on the request's facts and apply what they decided.

Deny answers at once (the policy's status and code, the policy named). Otherwise the decision is applied in
place: a forced model (the original kept in the record), route constraints intersected with any already set,
the body rewritten. Its `limit` and `guardrails` parts are read later by the ratelimit and guardrails filters
from `ctx.policy`. With no policy matching, the request pays for one evaluation and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from gateway.context import RequestContext, RouteConstraints
from gateway.errors import PolicyDenied
from gateway.filters.base import Stage
from gateway.policy.decision import NO_DECISION, Decision
from gateway.policy.facts import Facts, request_metadata
from gateway.policy.rewrite import apply_rewrite
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.policy.evaluate import PolicySet
    from gateway.policy.registry import PolicyRegistry
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.tokens import TokenCounter


class PolicyFilter(Stage):
    name = "policy"

    def __init__(self, policies: PolicyRegistry, tokens: TokenCounter, metrics: Metrics) -> None:
        self.registry = policies  # its `current` PolicySet is read once per request: a reload swaps it
        self.tokens = tokens
        self.metrics = metrics
        registry = metrics.registry
        self._decisions = Counter(
            "gateway_policy_decisions",
            "Policies that matched a request, by policy and outcome (deny, applied, shadow).",
            ["policy", "outcome"],
            registry=registry,
        )
        # Metrics.counter accumulators: a plain addition per request, written when the metrics are read or flushed.
        self._children: dict[tuple[str, str], Any] = {}
        # Decisions by the facts they were made on, for the PolicySet in force (see _decide).
        self._decided: dict[tuple[Any, ...], tuple[dict[str, str], Decision]] = {}
        self._decided_by: PolicySet | None = None

    @classmethod
    def build(cls, components: Components) -> PolicyFilter:
        return cls(components.policies, components.tokens, components.metrics)

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        policies = self.registry.current
        if not len(policies):
            return None
        decision = self._decide(ctx, policies)
        if decision is NO_DECISION:
            return None
        ctx.policy = decision
        self._record(ctx, decision)
        deny = decision.deny
        if deny is not None:
            raise PolicyDenied(deny.message, policy=deny.policy, status=deny.status, code=deny.code)
        if decision.model and decision.model != ctx.model:
            ctx.tags["model_original"] = ctx.model
            ctx.model = decision.model
            ctx.set_field("model", decision.model)
        constraints = decision.route_constraints()
        if constraints is not None:
            merged = _intersect(ctx.constraints, constraints)
            if merged is None:
                raise PolicyDenied(
                    "The policies' route constraints leave no region or provider the request already allows.",
                    policy=",".join(decision.matched),
                    code="no_deployment_allowed",
                )
            ctx.constraints = merged
        if decision.rewrite and apply_rewrite(ctx.body, decision, ctx.endpoint):
            ctx.body_changed = True
        return None

    def _decide(self, ctx: RequestContext, policies: PolicySet) -> Decision:
        """The policies' decision on the request's facts. Most requests repeat the facts of an earlier one (the same
        key asking for the same model), so a decision is kept by its facts and reused, but only where every fact it
        rests on is in the key: the principal's fields and metadata (compared whole), the body's model, stream and
        tools, the endpoint. Never when a policy reads the request's own metadata, nor when the evaluation read the
        prompt's tokens (those differ from prompt to prompt). Kept for one PolicySet: a reload starts afresh."""
        body = ctx.body
        if policies.needs_metadata or not isinstance(body, Mapping):
            return self._evaluate(ctx, policies)
        if self._decided_by is not policies:
            self._decided.clear()
            self._decided_by = policies
        principal = ctx.principal
        model = body.get("model")
        key = (
            principal.key_id,
            principal.name,
            principal.team,
            principal.project,
            principal.user,
            principal.role,
            model if isinstance(model, str) else "",
            ctx.endpoint,
            body.get("stream") is True,
            bool(body.get("tools") or body.get("functions")),
        )
        entry = self._decided.get(key)
        if entry is not None and entry[0] == principal.metadata:
            return entry[1]
        count = self._counter(ctx) if policies.needs_tokens else None
        facts = Facts.from_request(body, ctx.endpoint, principal, 0, None, count_tokens=count)
        decision = policies.evaluate(facts)
        if count is None or facts.count_tokens is not None:  # the tokens were not read: the facts above decided
            if len(self._decided) >= 4096:
                self._decided.clear()
            self._decided[key] = (dict(principal.metadata), decision)
        return decision

    def _evaluate(self, ctx: RequestContext, policies: PolicySet) -> Decision:
        count = self._counter(ctx) if policies.needs_tokens else None
        metadata = None
        if policies.needs_metadata:
            metadata = request_metadata({"metadata": ctx.request_metadata()}, ctx.headers)
        facts = Facts.from_request(ctx.body, ctx.endpoint, ctx.principal, 0, metadata, count_tokens=count)
        return policies.evaluate(facts)

    def _counter(self, ctx: RequestContext) -> Callable[[], int]:
        tokens, endpoint, model, body = self.tokens, ctx.endpoint, ctx.model, ctx.body

        def count() -> int:
            return tokens.count_prompt(endpoint, model, body)

        return count

    def _record(self, ctx: RequestContext, decision: Decision) -> None:
        tags = ctx.tags
        for name, value in decision.labels.items():
            tags.setdefault(name, value)
        if decision.matched:
            tags["policies"] = ",".join(decision.matched)
        if decision.shadow:
            tags["policies_shadow"] = ",".join(s.policy for s in decision.shadow)
        outcome = "deny" if decision.deny is not None else "applied"
        for name in decision.matched:
            self._count(name, "deny" if decision.deny and decision.deny.policy == name else outcome)
        for shadow in decision.shadow:
            self._count(shadow.policy, "shadow")

    def _count(self, policy: str, outcome: str) -> None:
        child = self._children.get((policy, outcome))
        if child is None:  # labels() costs a lock and a dict lookup per call: keep the children
            child = self._children[(policy, outcome)] = self.metrics.counter(self._decisions.labels(policy, outcome))
        child.value += 1


def _intersect(current: RouteConstraints | None, new: RouteConstraints) -> RouteConstraints | None:
    """Constraints from two sources: both must hold (an empty set means no constraint of that kind). None when
    they contradict each other (no region, or no provider, satisfies both)."""
    if current is None:
        return new
    regions, providers = _both(current.regions, new.regions), _both(current.providers, new.providers)
    if regions is None or providers is None:
        return None
    return RouteConstraints(regions=regions, providers=providers, tags=current.tags | new.tags)


def _both(a: frozenset[str], b: frozenset[str]) -> frozenset[str] | None:
    if a and b:
        return (a & b) or None
    return a or b
