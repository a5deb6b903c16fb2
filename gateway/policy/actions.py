"""A policy's `actions:` → Actions, with every problem reported at its key path.

Guardrail settings are type-checked only where this module knows the setting (types, threshold, max_tokens,
max_chars, deny, topics, schema); the rest pass through for the guardrail check itself to validate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.policy.model import (
    ACTIONS,
    BUDGET_PERIODS,
    CHECK_ACTIONS,
    CHECKS,
    DEFAULT_STAGES,
    STAGES,
    Actions,
    CachePlan,
    Deny,
    Guardrail,
    Limit,
    Rewrite,
    Route,
)
from gateway.policy.shapes import (
    At,
    is_int,
    is_json,
    is_number,
    is_str_list,
    kind,
    mapping,
    optional,
    show,
    unknown_keys,
)

# Body fields a rewrite may not touch: the model is route.model's, the prompt is the user's, stream changes the
# shape of the answer the client is waiting for.
PROTECTED_FIELDS = frozenset({"model", "messages", "prompt", "input", "stream"})
_CODE = re.compile(r"[A-Za-z0-9_.-]+")


def parse_actions(value: Any, policy: str, at: At) -> Actions | None:
    if not isinstance(value, dict):
        at.add("actions", f"expected a mapping of action: settings, got {kind(value)}")
        return None
    unknown_keys(value, ACTIONS, "actions", at, "action")
    parsers: dict[str, Callable[[Any, str, At], Any]] = {
        "route": _route,
        "rewrite": _rewrite,
        "limit": _limit,
        "guardrails": _guardrails,
        "tag": _tag,
        "cache": lambda v, rel, at: _cache(v, policy, rel, at),
    }
    parts: dict[str, Any] = {
        name: parse(value[name], f"actions.{name}", at) for name, parse in parsers.items() if name in value
    }
    if "deny" in value:
        parts["deny"] = _deny(value["deny"], policy, at)
        others = sorted(set(value) & {"route", "rewrite", "limit", "guardrails", "cache"})
        if others:
            at.add("actions.deny", f"a deny cannot go with {', '.join(others)} (only with tag): they would never apply")
    if any(v is None for v in parts.values()):
        return None
    return Actions(
        deny=parts.get("deny"),
        route=parts.get("route"),
        rewrite=parts.get("rewrite"),
        limit=parts.get("limit"),
        guardrails=parts.get("guardrails", ()),
        tag=parts.get("tag", {}),
        cache=parts.get("cache"),
    )


def _deny(value: Any, policy: str, at: At) -> Deny | None:
    rel = "actions.deny"
    if not mapping(value, rel, ("status", "code", "message"), at):
        return None
    ok = True
    status = value.get("status", 403)
    if not is_int(status) or not 400 <= status <= 499:
        at.add(f"{rel}.status", f"expected a 4xx status code, got {show(status)}")
        ok = False
    code = value.get("code", "policy_denied")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        at.add(f"{rel}.code", f"expected a code of letters, digits, '_', '.' or '-', got {show(code)}")
        ok = False
    message = value.get("message", f"Request denied by policy {policy}.")
    if not isinstance(message, str) or not message:
        at.add(f"{rel}.message", f"expected a non-empty string, got {show(message)}")
        ok = False
    return Deny(status=status, code=code, message=message, policy=policy) if ok else None


def _route(value: Any, rel: str, at: At) -> Route | None:
    if not mapping(value, rel, ("model", "regions", "providers", "tags"), at, nonempty=True):
        return None
    model = value.get("model")
    ok = optional(model, f"{rel}.model", at, lambda v: isinstance(v, str) and bool(v), "a model name")
    sets: dict[str, frozenset[str] | None] = {}
    for name in ("regions", "providers", "tags"):
        item = value.get(name)
        if item is not None and not (is_str_list(item) and item and all(item)):
            # An empty list would mean "nowhere": a deny says that more clearly.
            at.add(f"{rel}.{name}", f"expected a non-empty list of strings, got {show(item)}")
            ok = False
        sets[name] = frozenset(item) if ok and item is not None else None
    if not ok:
        return None
    return Route(model=model, regions=sets["regions"], providers=sets["providers"], tags=sets["tags"] or frozenset())


def _rewrite(value: Any, rel: str, at: At) -> Rewrite | None:
    if not mapping(value, rel, ("max_tokens", "set", "strip", "system"), at, nonempty=True):
        return None
    max_tokens = value.get("max_tokens")
    ok = optional(max_tokens, f"{rel}.max_tokens", at, lambda v: is_int(v) and v >= 1, "a positive integer")
    fields = value.get("set", {})
    if not isinstance(fields, dict):
        at.add(f"{rel}.set", f"expected a mapping of body field: value, got {kind(fields)}")
        ok = False
        fields = {}
    for name, item in fields.items():
        if name in PROTECTED_FIELDS:
            at.add(f"{rel}.set.{name}", f"{name} cannot be set by a rewrite (route.model sets the model)")
            ok = False
        elif not is_json(item):
            at.add(f"{rel}.set.{name}", f"expected a JSON value, got {kind(item)}")
            ok = False
    strip = value.get("strip", [])
    if not is_str_list(strip):
        at.add(f"{rel}.strip", f"expected a list of strings, got {show(strip)}")
        ok = False
    elif PROTECTED_FIELDS & set(strip):
        at.add(f"{rel}.strip", f"cannot strip {', '.join(sorted(PROTECTED_FIELDS & set(strip)))}")
        ok = False
    system = value.get("system")
    ok &= optional(system, f"{rel}.system", at, lambda v: isinstance(v, str) and bool(v), "a non-empty string")
    if not ok:
        return None
    return Rewrite(max_tokens=max_tokens, set=dict(fields), strip=frozenset(strip), system=system)


def _limit(value: Any, rel: str, at: At) -> Limit | None:
    if not mapping(value, rel, ("rpm", "tpm", "budget_usd", "budget_period"), at, nonempty=True):
        return None
    ok = True
    for name in ("rpm", "tpm"):
        ok &= optional(value.get(name), f"{rel}.{name}", at, lambda v: is_int(v) and v >= 1, "a positive integer")
    budget = value.get("budget_usd")
    ok &= optional(budget, f"{rel}.budget_usd", at, lambda v: is_number(v) and v > 0, "a positive number")
    period = value.get("budget_period")
    ok &= optional(period, f"{rel}.budget_period", at, lambda v: v in BUDGET_PERIODS, " or ".join(BUDGET_PERIODS))
    if period is not None and budget is None:
        at.add(f"{rel}.budget_period", "a budget_period needs a budget_usd")
        ok = False
    if not ok:
        return None
    return Limit(
        rpm=value.get("rpm"),
        tpm=value.get("tpm"),
        budget_usd=float(budget) if budget is not None else None,
        budget_period=period if period is not None else ("month" if budget is not None else None),
    )


# Settings type-checked here; any other setting passes through for the check itself to validate.
_SETTING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "types": (lambda v: is_str_list(v), "a list of strings"),
    "threshold": (lambda v: is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "max_tokens": (lambda v: is_int(v) and v >= 0, "an integer ≥ 0"),
    "max_chars": (lambda v: is_int(v) and v >= 0, "an integer ≥ 0"),
    "deny": (lambda v: is_str_list(v), "a list of strings"),
    "topics": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and is_str_list(t) for k, t in v.items()),
        "a mapping of topic name: list of strings",
    ),
    "schema": (lambda v: isinstance(v, dict) and is_json(v), "a mapping (a JSON Schema)"),
}


def _guardrails(value: Any, rel: str, at: At) -> tuple[Guardrail, ...] | None:
    if not isinstance(value, dict) or not value:
        at.add(rel, f"expected a mapping of check name: settings, got {show(value)}")
        return None
    out: list[Guardrail] = []
    ok = True
    for name, settings in value.items():
        where = f"{rel}.{name}"
        if name not in CHECKS:
            at.add(where, f"unknown check {name!r} (expected one of: {', '.join(CHECKS)})")
            ok = False
            continue
        if not isinstance(settings, dict):
            at.add(where, f"expected a mapping of settings (with an action), got {kind(settings)}")
            ok = False
            continue
        action = settings.get("action")
        allowed = CHECK_ACTIONS[name]
        if action is None:
            at.add(f"{where}.action", f"required key is missing (one of: {', '.join(allowed)})")
            ok = False
        elif action not in allowed:
            at.add(f"{where}.action", f"must be one of {', '.join(allowed)}, got {show(action)}")
            ok = False
        stage = settings.get("stage", DEFAULT_STAGES[name])
        if stage not in STAGES:
            at.add(f"{where}.stage", f"must be one of {', '.join(STAGES)}, got {show(stage)}")
            ok = False
        for key, item in settings.items():
            check = _SETTING_CHECKS.get(str(key))
            if check is not None and not check[0](item):
                at.add(f"{where}.{key}", f"expected {check[1]}, got {show(item)}")
                ok = False
        if ok:
            stages = frozenset({"input", "output"}) if stage == "both" else frozenset({stage})
            extra = {str(k): v for k, v in settings.items() if k not in ("action", "stage")}
            out.append(Guardrail(name=name, action=str(action), stages=stages, settings=extra))
    return tuple(out) if ok else None


def _tag(value: Any, rel: str, at: At) -> dict[str, str] | None:
    if not isinstance(value, dict) or not value:
        at.add(rel, f"expected a mapping of label: value, got {show(value)}")
        return None
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str) or is_number(item):
            out[str(key)] = str(item)
        else:
            at.add(f"{rel}.{key}", f"expected a string, got {show(item)}")
    return out if len(out) == len(value) else None


def _cache(value: Any, policy: str, rel: str, at: At) -> CachePlan | None:
    if not mapping(value, rel, ("mode", "ttl_s", "min_score"), at, nonempty=True):
        return None
    mode = value.get("mode", "exact")
    ok = True
    if mode not in ("off", "exact", "semantic"):
        at.add(f"{rel}.mode", f"must be one of off, exact, semantic, got {show(mode)}")
        ok = False
    ttl = value.get("ttl_s")
    ok &= optional(ttl, f"{rel}.ttl_s", at, lambda v: is_number(v) and v > 0, "a positive number of seconds")
    score = value.get("min_score")
    ok &= optional(score, f"{rel}.min_score", at, lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
    if score is not None and mode != "semantic":
        at.add(f"{rel}.min_score", "only for mode semantic")
        ok = False
    if not ok:
        return None
    return CachePlan(
        mode=mode,
        ttl_s=float(ttl) if ttl is not None else None,
        min_score=float(score) if score is not None else None,
        policy=policy,
    )
