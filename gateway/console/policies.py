"""Policies: every policy in force (files read-only, API ones with their version), a YAML editor checked by the
same loader as policy files (problems with their line, as you type), versions with a diff and rollback, and a
"try a request" panel over evaluate — the policy API's PolicyAdmin, after the same role checks."""

from __future__ import annotations

import difflib
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.policies import PolicyAdmin
from gateway.console.policy_form import ACTIONS, GUARDRAIL_ACTIONS, policy_yaml
from gateway.console.web import PREFIX, Console
from gateway.context import Principal
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.identity import roles
from gateway.policy.loader import parse_policies
from gateway.policy.problems import PolicyError

NEW_POLICY = """\
- name: my-policy
  description: What this policy is for.
  priority: 100
  mode: enforce        # enforce | shadow (recorded, not applied) | off
  match:
    project: my-project
  actions:
    limit: {rpm: 60}
"""
SAMPLE_REQUEST = '{"model": "demo", "messages": [{"role": "user", "content": "hello"}]}'
_EDIT = "POST /api/v1/policies"


def _admin(console: Console) -> PolicyAdmin:
    return PolicyAdmin(console.gateway)


_OUTCOMES = ("deny", "applied", "shadow")


def decisions(console: Console, name: str) -> dict[str, int]:
    """How often the policy decided, by outcome, in this worker since it started (the policy filter's
    gateway_policy_decisions counter): for a shadow policy, how often it would have acted."""
    registry = console.gateway.metrics.registry
    counts = {}
    for outcome in _OUTCOMES:
        value = registry.get_sample_value("gateway_policy_decisions_total", {"policy": name, "outcome": outcome})
        counts[outcome] = int(value or 0)
    return counts


async def policies_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /api/v1/policies", me)
    listing = _admin(console).list_policies(me)
    for policy in listing["data"]:
        policy["decisions"] = decisions(console, policy["name"])
    context = {
        "me": me,
        "title": "Policies",
        "policies": listing["data"],
        "reload_error": listing["reload_error"],
        "can_edit": roles.allows(_EDIT, me.role),
        "saved": request.query_params.get("saved", ""),
        "deleted": request.query_params.get("deleted", ""),
    }
    return console.render("policies.html", request, context, session=session)


async def policy_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /api/v1/policies/{name}", me)
    admin = _admin(console)
    name = request.path_params["name"]
    policy = admin.one(name, me)
    versions: list[dict[str, Any]] = []
    if policy["origin"] == "api":
        roles.require("GET /api/v1/policies/{name}/versions", me)
        versions = (await admin.history(name, me))["data"]
        for newer, older in zip(versions, versions[1:], strict=False):
            newer["diff"] = _diff(older, newer)
    context = {
        "me": me,
        "title": f"Policy {name}",
        "p": policy,
        "actions": orjson.dumps(policy["actions"], option=orjson.OPT_INDENT_2).decode(),
        "versions": versions,
        "can_edit": roles.allows(_EDIT, me.role) and policy["origin"] == "api",
        "rolled": request.query_params.get("rolled", ""),
    }
    return console.render("policy.html", request, context, session=session)


def _diff(older: dict[str, Any], newer: dict[str, Any]) -> list[tuple[str, str]]:
    """The change from one version to the next, line by line: (kind, text), kind one of add, del, same, hunk."""
    lines = difflib.unified_diff(
        (older.get("source") or "").splitlines(),
        (newer.get("source") or "").splitlines(),
        f"version {older['version']}",
        f"version {newer['version']}",
        lineterm="",
    )
    kinds = {"+": "add", "-": "del", "@": "hunk", " ": "same"}
    return [(kinds.get(line[:1], "same"), line) for line in lines if not line.startswith(("+++", "---"))]


async def editor(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require(_EDIT, me)
    name = request.path_params.get("name")
    text = NEW_POLICY
    if name is not None:
        policy = _admin(console).one(name, me)
        if policy["origin"] != "api":
            raise NotFound(f"The policy {name!r} comes from a file and is read-only here.")
        text = policy.get("source") or ""
    return _editor(console, request, me, session, name, text, [])


def _editor(
    console: Console, request: Request, me: Principal, session: Any, name: str | None, text: str,
    problems: list[dict[str, Any]], *, status: int = 200,
) -> Response:  # fmt: skip
    context = {
        "me": me,
        "title": f"Edit {name}" if name else "New policy",
        "name": name,
        "text": text,
        "problems": problems,
        "line_count": max(12, text.count("\n") + 2),
    }
    return console.render("policy_edit.html", request, context, status=status, session=session)


def check(text: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The one policy in the editor's text, or the problems the policy loader finds in it, each with its line."""
    try:
        parse_policies(text, "editor")
    except PolicyError as exc:
        return None, [{"line": p.line, "path": p.key_path, "message": p.message} for p in exc.problems]
    data = yaml.safe_load(text)
    items = data.get("policies") if isinstance(data, dict) else data
    if not isinstance(items, list) or len(items) != 1:
        return None, [{"line": None, "path": "", "message": "write exactly one policy (a list of one item)"}]
    return items[0], []


async def check_fragment(console: Console, request: Request) -> Response:
    """The problems list alone, for the editor's check as you type (htmx)."""
    session, me = await console.session(request.scope)
    roles.require(_EDIT, me)
    form = await console.form(request, session)
    _, problems = check(form.get("yaml", ""))
    return console.render("policy_problems.html", request, {"me": me, "problems": problems}, session=session)


async def form_page(console: Console, request: Request) -> Response:
    """GET: the form for the common cases; POST: its YAML, in the editor, checked, not yet saved."""
    session, me = await console.session(request.scope)
    roles.require(_EDIT, me)
    if request.method == "POST":
        text = policy_yaml(await console.form(request, session))
        _, problems = check(text)
        return _editor(console, request, me, session, None, text, problems)
    context = {"me": me, "title": "New policy (form)", "actions": ACTIONS, "guardrails": GUARDRAIL_ACTIONS}
    return console.render("policy_form.html", request, context, session=session)


async def save(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require(_EDIT if "name" not in request.path_params else "PUT /api/v1/policies/{name}", me)
    form = await console.form(request, session)
    name = request.path_params.get("name")
    text = form.get("yaml", "")
    policy, problems = check(text)
    if policy is not None:
        try:
            saved = await _admin(console).save(name, {"policy": policy}, me.name)
        except InvalidRequest as exc:
            problems = [{"line": None, "path": "", "message": str(exc.message)}]
        except GatewayError as exc:  # a conflict: the name is taken, or comes from a file
            problems = [{"line": None, "path": "", "message": str(exc.message)}]
        else:
            return RedirectResponse(f"{PREFIX}/policies/{saved['name']}?saved={saved['version']}", status_code=303)
    return _editor(console, request, me, session, name, text, problems, status=400)


async def rollback(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("POST /api/v1/policies/{name}/rollback", me)
    form = await console.form(request, session)
    name = request.path_params["name"]
    try:
        version = int(form.get("version", ""))
    except ValueError:
        raise InvalidRequest("version must be a version number.", param="version") from None
    await _admin(console).rollback(name, {"version": version}, me.name)
    return RedirectResponse(f"{PREFIX}/policies/{name}?rolled={version}", status_code=303)


async def delete(console: Console, request: Request) -> Response:
    """Delete an API policy (kept in its history): DELETE /api/v1/policies/{name}'s work."""
    session, me = await console.session(request.scope)
    roles.require("DELETE /api/v1/policies/{name}", me)
    await console.form(request, session)
    name = request.path_params["name"]
    await _admin(console).delete(name, me.name)
    return RedirectResponse(f"{PREFIX}/policies?deleted={name}", status_code=303)


async def try_request(console: Console, request: Request) -> Response:
    """GET: the form; POST: evaluate's decision and each policy's step for the request and caller given."""
    session, me = await console.session(request.scope)
    roles.require("POST /api/v1/policies/evaluate", me)
    form: dict[str, str] = {"request": SAMPLE_REQUEST, "project": me.project, "role": "developer"}
    result: dict[str, Any] | None = None
    problem, status = "", 200
    if request.method == "POST":
        form = await console.form(request, session)
        try:
            result = _admin(console).evaluate(_evaluate_body(form), me)
        except InvalidRequest as exc:
            problem, status = str(exc.message), 400
    context = {
        "me": me,
        "title": "Try a request",
        "form": form,
        "result": result,
        "decision": orjson.dumps(result["decision"], option=orjson.OPT_INDENT_2).decode() if result else "",
        "problem": problem,
        "is_admin": me.role == "admin",
    }
    return console.render("policy_try.html", request, context, status=status, session=session)


def _evaluate_body(form: dict[str, str]) -> dict[str, Any]:
    try:
        body = orjson.loads(form.get("request", ""))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request is not valid JSON: {exc}", param="request") from None
    principal = {k: form[k] for k in ("project", "role", "team", "user", "key") if form.get(k, "").strip()}
    metadata = {}
    for line in form.get("metadata", "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            metadata[key.strip()] = value.strip()
    tokens = form.get("tokens", "").strip()
    return {
        "request": body,
        "principal": principal,
        "metadata": metadata,
        "tokens": int(tokens) if tokens.isdigit() else 0,
    }
