"""The policy form for the common cases — match on project, model, team or user; deny, route to a model or
regions, limit, guardrails — which writes the same YAML as the editor and hands it to the editor to check and
save: one path to a saved policy."""

from __future__ import annotations

from typing import Any

import yaml

GUARDRAIL_ACTIONS = {"pii": ("log", "redact", "block"), "injection": ("log", "block"), "abuse": ("log", "block")}
ACTIONS = ("deny", "route", "limit", "guardrails")


def _list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _number(raw: str) -> int | float | str:
    """A number when the text is one; the text itself otherwise (the loader names the field that is wrong)."""
    text = raw.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def policy_yaml(form: dict[str, str]) -> str:
    """The form's policy as the editor's YAML (a list of one policy)."""
    policy: dict[str, Any] = {"name": form.get("name", "").strip() or "new-policy"}
    if form.get("description", "").strip():
        policy["description"] = form["description"].strip()
    policy["mode"] = form.get("mode") or "enforce"
    if form.get("priority", "").strip():
        policy["priority"] = _number(form["priority"])
    match: dict[str, Any] = {}
    for field in ("project", "model", "team", "user"):
        values = _list(form.get(field, ""))
        if values:
            match[field] = values[0] if len(values) == 1 else values
    if match:
        policy["match"] = match
    policy["actions"] = _actions(form)
    return yaml.safe_dump([policy], sort_keys=False, allow_unicode=True)


def _actions(form: dict[str, str]) -> dict[str, Any]:
    kind = form.get("action", "deny")
    if kind == "deny":
        deny: dict[str, Any] = {"status": _number(form.get("deny_status") or "403")}
        if form.get("deny_message", "").strip():
            deny["message"] = form["deny_message"].strip()
        return {"deny": deny}
    if kind == "route":
        route: dict[str, Any] = {}
        if form.get("route_model", "").strip():
            route["model"] = form["route_model"].strip()
        if _list(form.get("route_regions", "")):
            route["regions"] = _list(form["route_regions"])
        return {"route": route}
    if kind == "limit":
        return {"limit": {k: _number(form[k]) for k in ("rpm", "tpm", "budget_usd") if form.get(k, "").strip()}}
    checks: dict[str, Any] = {}
    for check, choices in GUARDRAIL_ACTIONS.items():
        action = form.get(f"g_{check}", "")
        if action in choices:
            checks[check] = {"action": action}
    if form.get("g_length_max_chars", "").strip():
        checks["length"] = {"action": "block", "max_chars": _number(form["g_length_max_chars"])}
    return {"guardrails": checks}
