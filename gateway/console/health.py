"""Deployments with their breaker state and latency, and the drain / undrain / reset buttons for admins — the
admin API's functions, after the same role checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.admin import ACTIONS, act_on_deployment, list_deployments
from gateway.api.analytics import telemetry_status
from gateway.api.features import feature_flags, set_feature
from gateway.config.telemetry import CONTENT_MODES
from gateway.console.web import PREFIX, Console
from gateway.context import Principal
from gateway.identity import roles


async def health_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /admin/deployments", me)
    context = {
        "me": me,
        "title": "Health",
        "deployments": list_deployments(console.gateway)["data"],
        "can_act": roles.allows("POST /admin/deployments/{id}/{action}", me.role),
        "done": request.query_params.get("done", ""),
        "project": request.query_params.get("project", ""),
        "flags": _flags(console, me, request.query_params.get("project") or None),
        "can_set_flags": roles.allows("PUT /api/v1/features/{flag}", me.role),
        "telemetry": (
            telemetry_status(console.gateway) if roles.allows("GET /api/v1/telemetry/status", me.role) else None
        ),
    }
    return console.render("health.html", request, context, session=session)


async def act(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("POST /admin/deployments/{id}/{action}", me)
    form = await console.form(request, session)
    deployment, action = form.get("deployment", ""), form.get("action", "")
    await act_on_deployment(console.gateway, deployment, action if action in ACTIONS else None)
    return RedirectResponse(f"{PREFIX}/health?done={action}", status_code=303)


def _flags(console: Console, me: Principal, project: str | None) -> dict[str, Any] | None:
    if not roles.allows("GET /api/v1/features", me.role):
        return None
    shown = feature_flags(console.gateway, me, project)
    for flag, state in shown["flags"].items():
        state["choices"] = list(CONTENT_MODES) if flag == "content_logging" else ["true", "false"]
        state["shown"] = str(state["value"]).lower() if isinstance(state["value"], bool) else str(state["value"])
    return shown


async def set_flag(console: Console, request: Request) -> Response:
    """Set a flag for a project (or the global value), or remove the API's override: the features API's code."""
    session, me = await console.session(request.scope)
    form = await console.form(request, session)
    remove = form.get("action") == "reset"
    roles.require("DELETE /api/v1/features/{flag}" if remove else "PUT /api/v1/features/{flag}", me)
    raw = form.get("value", "")
    value: bool | str | None = None if remove else {"true": True, "false": False}.get(raw, raw)
    project = form.get("project", "")
    await set_feature(console.gateway, me, form.get("flag", ""), value, project, remove=remove)
    done = "reset" if remove else "set"
    return RedirectResponse(f"{PREFIX}/health?{urlencode({'done': done, 'project': project})}", status_code=303)
