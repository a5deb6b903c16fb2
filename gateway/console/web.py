"""What every console page shares: the templates, the security headers, the session behind a request, and forms
with their CSRF check. Pages are rendered on the server; nothing here runs for /v1/*."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.console.reveal import Sealer
from gateway.console.session import COOKIE, Session, Signer, session_key
from gateway.context import Principal
from gateway.errors import AuthenticationFailed, GatewayError, PermissionDenied, ServiceUnavailable
from gateway.identity import roles
from gateway.store.base import StoreUnavailable
from gateway.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("gateway.console")
PREFIX = "/ui"
MAX_FORM_BYTES = 64 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# The pages of the navigation: (path, label, the matrix route that decides who sees it).
NAV = [
    ("/ui/traces", "Traces", "GET /api/v1/traces"),
    ("/ui/policies", "Policies", "GET /api/v1/policies"),
    ("/ui/spend", "Spend", "GET /api/v1/usage"),
    ("/ui/keys", "Keys", "GET /admin/keys"),
    ("/ui/health", "Health", "GET /admin/deployments"),
]


class SecurityHeaders:
    """Pure ASGI: every console answer (pages, static files, errors) carries the CSP and framing headers; pages
    are never cached (static files set their own caching)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{PREFIX}/static/")

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SignInRequired(Exception):
    """No valid session: the page sends the browser to sign in (and back after)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class Console:
    """The console's shared state: the gateway it reads, the session signer, the templates."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config.console
        key = session_key(config.session_secret, gateway.config.auth.admin_key)
        if not key and gateway.config.server.workers > 1:
            logger.warning(
                "console: no console.session_secret nor auth.admin_key: each worker signs its own sessions, "
                "so a signed-in browser is sent to sign in again whenever another worker answers"
            )
        self.signer = Signer(key, config.session_ttl_s)
        self.sealer = Sealer(self.signer.key)
        self.secure_cookies = config.secure_cookies
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters.update(when=_when, ms=_ms, usd=_usd, query=_query)

    async def session(self, scope: Scope) -> tuple[Session, Principal]:
        """The request's session and who it is, identified again (a key's session) from the cookie."""
        session = self.signer.load(cookie(scope, COOKIE))
        if session is None:
            raise SignInRequired()
        if session.principal is not None:
            return session, session.principal
        try:
            return session, await self.gateway.identity.identify_digest(session.key_digest)
        except AuthenticationFailed as exc:
            raise SignInRequired(str(exc.message)) from None

    def render(
        self, name: str, request: Request, context: dict[str, Any], *, status: int = 200, session: Session | None = None
    ) -> Response:
        principal: Principal | None = context.get("me")
        nav = [(path, label) for path, label, route in NAV if principal and roles.allows(route, principal.role)]
        csrf = self.signer.csrf_token(session.sid) if session else ""
        page = self.templates.get_template(name).render(
            request=request, nav=nav, csrf=csrf, path=request.url.path, **context
        )
        return HTMLResponse(page, status_code=status)

    def set_cookie(self, response: Response, request: Request, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies or request.url.scheme == "https",
        )

    def clear_cookie(self, response: Response, request: Request, name: str) -> None:
        self.set_cookie(response, request, name, "", 0)

    async def form(self, request: Request, session: Session | None) -> dict[str, str]:
        """The POSTed form (urlencoded, bounded), after the CSRF check: the session's token, a same-origin request.
        A forged POST is a PermissionDenied."""
        _same_origin(request)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PermissionDenied("The form is too large.", code="form_too_large")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if session is not None and not self.signer.csrf_ok(session.sid, fields.get("csrf", "")):
            raise PermissionDenied("The form's CSRF token is missing or wrong: reload the page.", code="csrf_failed")
        return fields


Handler = Callable[[Console, Request], Awaitable[Response]]


def page(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint from a page handler: no session sends the browser to sign in, a GatewayError becomes the error
    page with its status (a refused role's 403, a bad filter's 400), a store that is down a 503."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(console, request)
        except SignInRequired as exc:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            query = {"next": target} | ({"reason": exc.message} if exc.message else {})
            response: Response = RedirectResponse(f"{PREFIX}/signin?{urlencode(query)}", status_code=303)
            console.clear_cookie(response, request, COOKIE)
            return response
        except StoreUnavailable:
            error: GatewayError = ServiceUnavailable("The store cannot be reached; try again shortly.")
        except GatewayError as exc:
            error = exc
        me = None
        try:
            session, me = await console.session(request.scope)
        except (SignInRequired, GatewayError):
            session = None
        context = {"me": me, "error": error, "title": "Error"}
        return console.render("error.html", request, context, status=error.status_code, session=session)

    return endpoint


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise PermissionDenied("A console form must come from the console's own page.", code="csrf_failed")


def cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return str(v)
    return None


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f} ms" if value < 10 else f"{value:,.1f} ms"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.6f}" if value < 0.01 else f"${value:,.4f}"


def _query(pairs: list[tuple[str, str]] | dict[str, str], **changes: str | None) -> str:
    """A query string from pairs with `changes` applied (None drops a name); blank values dropped."""
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    kept = [(k, v) for k, v in items if k not in changes and v != ""]
    kept += [(k, v) for k, v in changes.items() if v is not None]
    return urlencode(kept, quote_via=quote)
