"""Sign-in, sign-out and the landing page. Sign-in takes a gateway key or a JWT of the configured issuer through
the Authenticator (the API's own check) and gives a session cookie for it."""

from __future__ import annotations

import hmac
import os

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console.session import COOKIE, PRE_COOKIE
from gateway.console.web import NAV, PREFIX, Console, SignInRequired, cookie
from gateway.errors import AuthenticationFailed, GatewayError, NotFound, PermissionDenied
from gateway.identity import roles
from gateway.identity.keys import key_digest
from gateway.store.base import StoreUnavailable

_PRE_TTL_S = 3600


def _next(target: str | None) -> str:
    """Where to go after sign-in: a console path only (no open redirect)."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


async def signin_form(console: Console, request: Request) -> Response:
    try:
        await console.session(request.scope)
    except (SignInRequired, GatewayError, StoreUnavailable):  # none, or one that no longer holds: the form
        return _form(console, request, request.query_params.get("reason", ""))
    return RedirectResponse(_next(request.query_params.get("next")), status_code=303)


def _form(console: Console, request: Request, problem: str, *, status: int = 200) -> Response:
    token = os.urandom(16).hex()
    context = {
        "me": None,
        "title": "Sign in",
        "problem": problem,
        "pre": token,
        "next": request.query_params.get("next", ""),
    }
    response = console.render("signin.html", request, context, status=status)
    console.set_cookie(response, request, PRE_COOKIE, token, _PRE_TTL_S)
    return response


async def signin(console: Console, request: Request) -> Response:
    fields = await console.form(request, None)
    pre = cookie(request.scope, PRE_COOKIE)
    if not pre or not hmac.compare_digest(fields.get("csrf", "").encode(), pre.encode()):
        raise PermissionDenied("The sign-in form expired or came from elsewhere: reload it.", code="csrf_failed")
    credential = fields.get("credential", "").strip()
    try:
        principal = await console.gateway.identity.identify(credential or None)
    except AuthenticationFailed as exc:
        return _form(console, request, str(exc.message), status=401)
    if principal.source == "jwt":
        session = console.signer.new_session(principal=principal)
    else:
        session = console.signer.new_session(key_digest=key_digest(credential))
    response = RedirectResponse(_next(fields.get("next")), status_code=303)
    max_age = max(1, int(session.expires_at - console.signer.now()))
    console.set_cookie(response, request, COOKIE, console.signer.dump(session), max_age)
    console.clear_cookie(response, request, PRE_COOKIE)
    return response


async def signout(console: Console, request: Request) -> Response:
    session, _ = await console.session(request.scope)
    await console.form(request, session)
    response = RedirectResponse(f"{PREFIX}/signin?reason=Signed+out.", status_code=303)
    console.clear_cookie(response, request, COOKIE)
    return response


async def home(console: Console, request: Request) -> Response:
    """The first page the role may see; a role with none (a developer key) is told so."""
    session, me = await console.session(request.scope)
    for path, _, route in NAV:
        if roles.allows(route, me.role):
            return RedirectResponse(path, status_code=303)
    return console.render("home.html", request, {"me": me, "title": "Console"}, session=session)


async def not_found(console: Console, request: Request) -> Response:
    """Any other path under /ui: the console's own 404 page, with its navigation."""
    raise NotFound(f"No console page at {request.url.path}.")
