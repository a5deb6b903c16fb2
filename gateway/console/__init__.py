"""The web console at /ui: server-rendered pages (Jinja2) over the same functions as the JSON API, a few vendored
static files (htmx, the console's CSS and scripts) shipped as package data. Mounted by gateway/app.py when
`console.enabled`; nothing of it is on the path of /v1/*."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from starlette.routing import Mount, Route, Router, WebSocketRoute
from starlette.staticfiles import StaticFiles

from gateway.console import health, keys, policies, signin, spend, traces
from gateway.console.web import PREFIX, Console, SecurityHeaders, page

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def console_mount(gateway: Gateway) -> Mount:
    console = Console(gateway)
    export = traces.ConsoleTraceExport(console)
    static = StaticFiles(directory=str(files("gateway.console") / "static"))
    router = Router(
        routes=[
            Route("/", page(console, signin.home), methods=["GET"]),
            Route("/signin", page(console, signin.signin_form), methods=["GET"]),
            Route("/signin", page(console, signin.signin), methods=["POST"]),
            Route("/signout", page(console, signin.signout), methods=["POST"]),
            Route("/traces", page(console, traces.traces_page), methods=["GET"]),
            Route("/traces/export", export, methods=["GET"]),  # before /traces/{id}
            WebSocketRoute("/traces/tail", traces.ConsoleTail(console)),
            Route("/traces/{id}", page(console, traces.trace_page), methods=["GET"]),
            Route("/traces/{id}/export", export, methods=["GET"]),
            Route("/policies", page(console, policies.policies_page), methods=["GET"]),
            Route("/policies", page(console, policies.save), methods=["POST"]),
            Route("/policies/new", page(console, policies.editor), methods=["GET"]),  # before /policies/{name}
            Route("/policies/form", page(console, policies.form_page), methods=["GET", "POST"]),
            Route("/policies/check", page(console, policies.check_fragment), methods=["POST"]),
            Route("/policies/try", page(console, policies.try_request), methods=["GET", "POST"]),
            Route("/policies/{name}", page(console, policies.policy_page), methods=["GET"]),
            Route("/policies/{name}", page(console, policies.save), methods=["POST"]),
            Route("/policies/{name}/edit", page(console, policies.editor), methods=["GET"]),
            Route("/policies/{name}/rollback", page(console, policies.rollback), methods=["POST"]),
            Route("/policies/{name}/delete", page(console, policies.delete), methods=["POST"]),
            Route("/spend", page(console, spend.spend_page), methods=["GET"]),
            Route("/spend/reset", page(console, spend.reset), methods=["POST"]),
            Route("/keys", page(console, keys.keys_page), methods=["GET"]),
            Route("/keys", page(console, keys.create), methods=["POST"]),
            Route("/keys/created", page(console, keys.created_page), methods=["GET"]),
            Route("/keys/{key_id}/edit", page(console, keys.edit_page), methods=["GET"]),
            Route("/keys/{key_id}/edit", page(console, keys.edit), methods=["POST"]),
            Route("/keys/{key_id}/revoke", page(console, keys.revoke), methods=["POST"]),
            Route("/keys/{key_id}/rotate", page(console, keys.rotate), methods=["POST"]),
            Route("/health", page(console, health.health_page), methods=["GET"]),
            Route("/health", page(console, health.act), methods=["POST"]),
            Route("/health/flags", page(console, health.set_flag), methods=["POST"]),
            Mount("/static", app=static, name="static"),
            Route("/{path:path}", page(console, signin.not_found), methods=["GET"]),  # last: the console's 404
        ]
    )
    return Mount(PREFIX, app=SecurityHeaders(router))
