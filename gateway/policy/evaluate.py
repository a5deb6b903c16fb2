"""PolicySet: policies compiled once, evaluated per request, their actions combined into one Decision.

How matching policies combine:

1. Order. Policies are considered by priority, higher first, then by name. `off` policies are skipped.
2. Shadow. A `shadow` policy is evaluated; when it matches, its own actions are recorded in `decision.shadow`
   and never applied (nor does it count in `decision.matched`).
3. Deny. The first matching enforce policy with a deny wins: the decision is that deny and no other action
   applies. The labels (`tag`) of policies up to and including the deny are kept, for the record. Policies after
   it are still evaluated (they show in `matched`, explain and shadow).
4. Route. `model`: the first policy that sets it wins; the others are listed in `decision.overridden`.
   `regions` and `providers` intersect across policies; `tags` are a union (a deployment must carry all of them).
   An empty intersection makes the decision a deny: 403 `no_deployment_allowed`, naming the policies.
5. Rewrite. `max_tokens`: the smallest cap wins. `set`: per field, the first policy wins. `strip`: the union.
   `system`: every policy's message, in policy order.
6. Limit. Per field (rpm, tpm, budget_usd, budget_period), the first policy that sets it wins.
7. Guardrails. Per check, the settings of the first policy naming it, with the strictest action any matching
   policy asks for (block > redact > log; json_schema: block > retry > log) and the union of their stages.
8. Tag. Per label, the first policy wins.
9. Cache. The first policy with a cache action wins (its mode, ttl_s and min_score together).

A PolicySet is immutable: a reload builds a new one and swaps the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.policy.compile import Check, compile_policy
from gateway.policy.decision import (
    NO_DECISION,
    NO_LIMIT,
    NO_REWRITE,
    Decision,
    Explanation,
    GuardrailSpec,
    RewritePlan,
    ShadowOutcome,
    Step,
)
from gateway.policy.facts import Facts
from gateway.policy.model import ACTION_STRICTNESS, CachePlan, Deny, Limit, Policy
from gateway.policy.problems import PolicyError, duplicate_problems

_MAX_CACHED_DECISIONS = 4096


class _Compiled:
    __slots__ = ("checks", "policy", "shadow", "summary", "tests")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.checks: tuple[Check, ...] = compile_policy(policy)
        self.tests = tuple(c.test for c in self.checks)
        self.shadow = policy.mode == "shadow"
        self.summary = policy.actions.to_dict() if self.shadow else {}


class PolicySet:
    """Policies in evaluation order, compiled. Raises PolicyError when two share a name."""

    __slots__ = ("_compiled", "_decisions", "files", "needs_metadata", "needs_tokens", "policies")

    def __init__(self, policies: Iterable[Policy] = (), files: Sequence[str] = ()) -> None:
        given = list(policies)
        problems = duplicate_problems(given)
        if problems:
            raise PolicyError(problems)
        self.policies: tuple[Policy, ...] = tuple(sorted(given, key=lambda p: (-p.priority, p.name)))
        self.files = tuple(files)
        self._compiled = tuple(_Compiled(p) for p in self.policies if p.mode != "off")
        # Counting a prompt's tokens costs time per request: the filter does it only when a policy reads them.
        self.needs_tokens = any("tokens" in c.policy.fields() for c in self._compiled)
        # Likewise the request's own metadata (body and headers): gathered only when some policy reads metadata.
        self.needs_metadata = any(f.startswith("metadata.") for c in self._compiled for f in c.policy.fields())
        # The decision depends only on which policies matched, and traffic matches few combinations: combining
        # once per combination saves building a Decision on every request.
        self._decisions: dict[tuple[_Compiled, ...], Decision] = {}

    def __len__(self) -> int:
        return len(self.policies)

    def evaluate(self, facts: Facts) -> Decision:
        """The combined decision, or NO_DECISION (the very object) when no policy matched."""
        matched: list[_Compiled] | None = None
        for compiled in self._compiled:
            for test in compiled.tests:
                if not test(facts):
                    break
            else:
                if matched is None:
                    matched = [compiled]
                else:
                    matched.append(compiled)
        if matched is None:
            return NO_DECISION
        key = tuple(matched)
        decision = self._decisions.get(key)
        if decision is None:
            decision = combine(
                [c.policy for c in matched if not c.shadow],
                [ShadowOutcome(c.policy.name, c.summary) for c in matched if c.shadow],
            )
            if len(self._decisions) >= _MAX_CACHED_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def explain(self, facts: Facts) -> Explanation:
        """Every policy in order, matched or not and why, and the decision evaluate() gives for these facts."""
        reasons: dict[str, str] = {}
        matched: list[_Compiled] = []
        for compiled in self._compiled:
            failed = next((c for c in compiled.checks if not c.test(facts)), None)
            if failed is None:
                matched.append(compiled)
            else:
                reasons[compiled.policy.name] = failed.why(facts)
        enforce = [c.policy for c in matched if not c.shadow]
        shadow = [ShadowOutcome(c.policy.name, c.summary) for c in matched if c.shadow]
        decision = combine(enforce, shadow) if matched else NO_DECISION
        notes = _notes(enforce, decision)
        steps = []
        for policy in self.policies:
            if policy.mode == "off":
                reason, hit = "mode off: skipped", False
            elif policy.name in reasons:
                reason, hit = reasons[policy.name], False
            elif policy.mode == "shadow":
                reason, hit = "matched; shadow: actions recorded, not applied", True
            else:
                reason, hit = notes[policy.name], True
            steps.append(Step(policy.name, policy.mode, policy.priority, hit, reason, policy.location))
        return Explanation(tuple(steps), decision)


def combine(enforce: Sequence[Policy], shadow: Sequence[ShadowOutcome] = ()) -> Decision:
    """The rules of the module docstring, over enforce policies that matched, in evaluation order."""
    matched = tuple(p.name for p in enforce)
    labels: dict[str, str] = {}
    for policy in enforce:
        for key, value in policy.actions.tag.items():
            labels.setdefault(key, value)
        if policy.actions.deny is not None:
            return Decision(matched=matched, deny=policy.actions.deny, labels=labels, shadow=tuple(shadow))
    acc = _Accumulator()
    for policy in enforce:
        acc.add(policy)
    deny = acc.conflict()
    if deny is not None:
        return Decision(matched=matched, deny=deny, labels=labels, shadow=tuple(shadow))
    return Decision(
        matched=matched,
        model=acc.model,
        model_policy=acc.model_policy,
        regions=acc.regions,
        providers=acc.providers,
        tags=frozenset(acc.tags),
        rewrite=acc.rewrite(),
        limit=Limit(**acc.limit) if acc.limit else NO_LIMIT,
        guardrails=acc.guardrails,
        labels=labels,
        cache=acc.cache,
        shadow=tuple(shadow),
        overridden=tuple(acc.overridden),
    )


class _Accumulator:
    """The actions of the enforce policies that matched, folded one policy at a time (none of them denies)."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.model_policy: str | None = None
        self.overridden: list[str] = []
        self.regions: frozenset[str] | None = None
        self.region_policies: list[str] = []
        self.providers: frozenset[str] | None = None
        self.provider_policies: list[str] = []
        self.tags: set[str] = set()
        self.max_tokens: int | None = None
        self.set: dict[str, Any] = {}
        self.strip: set[str] = set()
        self.system: list[str] = []
        self.limit: dict[str, Any] = {}
        self.guardrails: dict[str, GuardrailSpec] = {}
        self.cache: CachePlan | None = None

    def add(self, policy: Policy) -> None:
        actions = policy.actions
        route = actions.route
        if route is not None:
            if route.model is not None:
                if self.model is None:
                    self.model, self.model_policy = route.model, policy.name
                else:
                    self.overridden.append(
                        f"{policy.name}: route.model {route.model!r} overridden by {self.model_policy}"
                    )
            if route.regions is not None:
                self.regions = route.regions if self.regions is None else self.regions & route.regions
                self.region_policies.append(policy.name)
            if route.providers is not None:
                self.providers = route.providers if self.providers is None else self.providers & route.providers
                self.provider_policies.append(policy.name)
            self.tags |= route.tags
        rewrite = actions.rewrite
        if rewrite is not None:
            if rewrite.max_tokens is not None and (self.max_tokens is None or rewrite.max_tokens < self.max_tokens):
                self.max_tokens = rewrite.max_tokens
            for key, value in rewrite.set.items():
                self.set.setdefault(key, value)
            self.strip |= rewrite.strip
            if rewrite.system is not None:
                self.system.append(rewrite.system)
        if actions.cache is not None and self.cache is None:
            self.cache = actions.cache
        if actions.limit is not None:
            for key, value in actions.limit.items():
                if value is not None:
                    self.limit.setdefault(key, value)
        for check in actions.guardrails:
            spec = self.guardrails.get(check.name)
            if spec is None:
                self.guardrails[check.name] = GuardrailSpec(
                    check.name, check.action, check.stages, check.settings, policy.name
                )
            else:
                stricter = ACTION_STRICTNESS[check.action] > ACTION_STRICTNESS[spec.action]
                self.guardrails[check.name] = dataclasses.replace(
                    spec, action=check.action if stricter else spec.action, stages=spec.stages | check.stages
                )

    def conflict(self) -> Deny | None:
        """A deny when the policies leave no region or no provider at all."""
        for allowed, names, what in (
            (self.regions, self.region_policies, "region"),
            (self.providers, self.provider_policies, "provider"),
        ):
            if allowed is not None and not allowed:
                return Deny(
                    status=403,
                    code="no_deployment_allowed",
                    message=f"Policies {_and(names)} allow no common {what}.",
                    policy=names[-1],
                )
        return None

    def rewrite(self) -> RewritePlan:
        if self.max_tokens is None and not (self.set or self.strip or self.system):
            return NO_REWRITE
        return RewritePlan(self.max_tokens, self.set, frozenset(self.strip), tuple(self.system))


def _notes(enforce: Sequence[Policy], decision: Decision) -> dict[str, str]:
    """For explain: what became of each matching enforce policy's actions."""
    notes: dict[str, str] = {}
    deny = decision.deny
    denied_at = next((i for i, p in enumerate(enforce) if deny is not None and p.name == deny.policy), None)
    for i, policy in enumerate(enforce):
        if deny is not None and deny.code == "no_deployment_allowed" and policy.actions.deny is None:
            notes[policy.name] = f"matched; the decision is a deny: {deny.message}"
        elif denied_at is not None and i == denied_at:
            notes[policy.name] = f"matched; denies ({deny.status} {deny.code})" if deny else "matched"
        elif denied_at is not None:
            kept = "only its labels kept" if i < denied_at else "actions not applied"
            notes[policy.name] = f"matched; {kept}: denied by {enforce[denied_at].name}"
        else:
            overridden = [o for o in decision.overridden if o.startswith(f"{policy.name}:")]
            notes[policy.name] = "matched; applied" + (f" ({'; '.join(overridden)})" if overridden else "")
    return notes


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
