"""Deployments with their breaker state and latency, and the drain / undrain / reset buttons for admins — the
admin API's functions, after the same role checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.admin import ACTIONS, act_on_deployment, list_deployments
from gateway.api.analytics import telemetry_status
from gateway.console.web import PREFIX, Console
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
