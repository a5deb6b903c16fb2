"""Virtual keys: the list (a non-admin sees its own project's), create and rotate (the key shown once, on the page
the POST redirects to), edit, revoke — through the admin API's own functions, after the same role checks."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.keys import create_key, get_key, list_keys, revoke_key, rotate_key, update_key
from gateway.console import reveal
from gateway.console.session import Session
from gateway.console.web import PREFIX, Console, cookie
from gateway.errors import InvalidRequest
from gateway.identity import roles
from gateway.identity.keys import ROLES

_NUMBERS = ("rpm", "tpm", "budget_usd", "expires_days")
_SHOWN = ("id", "name", "role", "project", "key", "rotated_from")
_TEXTS = ("name", "project", "team", "user", "role", "allowed_models", "budget_period")


async def keys_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /admin/keys", me)
    keys = await list_keys(console.gateway, me, request.query_params.get("project") or None)
    context = {
        "me": me,
        "title": "Keys",
        "keys": keys["data"],
        "roles": list(ROLES),
        "can_create": roles.allows("POST /admin/keys", me.role),
        "can_revoke": roles.allows("POST /admin/keys/{id}/revoke", me.role),
        "can_rotate": roles.allows("POST /admin/keys/{id}/rotate", me.role),
        "can_edit": roles.allows("PATCH /admin/keys/{id}", me.role),
        "revoked": request.query_params.get("revoked", ""),
        "updated": request.query_params.get("updated", ""),
        "project": request.query_params.get("project", ""),
        "problem": "",
        "form": {},
    }
    return console.render("keys.html", request, context, session=session)


async def create(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("POST /admin/keys", me)
    form = await console.form(request, session)
    try:
        created = await create_key(console.gateway, key_fields(form))
    except InvalidRequest as exc:
        keys = await list_keys(console.gateway, me, None)
        context = {
            "me": me, "title": "Keys", "keys": keys["data"], "roles": list(ROLES), "can_create": True,
            "can_revoke": roles.allows("POST /admin/keys/{id}/revoke", me.role), "revoked": "", "can_rotate": False,
            "can_edit": False, "updated": "", "project": "", "problem": str(exc.message), "form": form,
        }  # fmt: skip
        return console.render("keys.html", request, context, status=400, session=session)
    return _reveal(console, request, session, created, "Key created")


async def revoke(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("POST /admin/keys/{id}/revoke", me)
    await console.form(request, session)
    row = await revoke_key(console.gateway, request.path_params["key_id"])
    return RedirectResponse(f"{PREFIX}/keys?revoked={row['id']}", status_code=303)


async def rotate(console: Console, request: Request) -> Response:
    """A new key with the same attributes, shown once; the old one is revoked at once."""
    session, me = await console.session(request.scope)
    roles.require("POST /admin/keys/{id}/rotate", me)
    await console.form(request, session)
    created = await rotate_key(console.gateway, request.path_params["key_id"], {})
    return _reveal(console, request, session, created, "Key rotated")


def _reveal(console: Console, request: Request, session: Session, made: dict[str, Any], title: str) -> Response:
    """POST-redirect-GET: the new key goes to the page that shows it in a sealed cookie (gateway/console/reveal.py),
    so that reloading that page never makes another key."""
    shown = {name: made[name] for name in _SHOWN} | {"title": title}
    response = RedirectResponse(f"{PREFIX}/keys/created", status_code=303)
    console.set_cookie(response, request, reveal.COOKIE, console.sealer.seal(session.sid, shown), reveal.TTL_S)
    return response


async def created_page(console: Console, request: Request) -> Response:
    """The key just made, once: the cookie is cleared as it is shown; a reload says the key was shown already."""
    session, me = await console.session(request.scope)
    roles.require("POST /admin/keys", me)
    made = console.sealer.open(session.sid, cookie(request.scope, reveal.COOKIE))
    if made is None:
        context = {"me": me, "title": "Key already shown"}
        return console.render("key_shown.html", request, context, session=session)
    context = {"me": me, "title": made["title"], "key": made}
    response = console.render("key_created.html", request, context, session=session)
    console.clear_cookie(response, request, reveal.COOKIE)
    return response


async def edit_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("PATCH /admin/keys/{id}", me)
    key = await get_key(console.gateway, request.path_params["key_id"])
    form = {
        "name": key.name, "allowed_models": ", ".join(key.allowed_models), "rpm": key.rpm or "",
        "tpm": key.tpm or "", "budget_usd": f"{key.budget_usd:g}" if key.budget_usd else "",
        "budget_period": key.budget_period,
    }  # fmt: skip
    context = {"me": me, "title": "Edit key", "key": key.public(), "form": form, "problem": ""}
    return console.render("key_edit.html", request, context, session=session)


async def edit(console: Console, request: Request) -> Response:
    """PATCH /admin/keys/{id}'s work from the form; every field is sent, a blank number is none (0)."""
    session, me = await console.session(request.scope)
    roles.require("PATCH /admin/keys/{id}", me)
    form = await console.form(request, session)
    key_id = request.path_params["key_id"]
    try:
        fields = key_fields({k: form.get(k, "") for k in ("rpm", "tpm", "budget_usd")})
        fields.update({n: fields.get(n, 0) for n in ("rpm", "tpm", "budget_usd")})
        fields.update(name=form.get("name", "").strip(), allowed_models=form.get("allowed_models", ""))
        fields["budget_period"] = form.get("budget_period") or "month"
        await update_key(console.gateway, key_id, fields)
    except InvalidRequest as exc:
        key = await get_key(console.gateway, key_id)
        context = {"me": me, "title": "Edit key", "key": key.public(), "form": form, "problem": str(exc.message)}
        return console.render("key_edit.html", request, context, status=400, session=session)
    return RedirectResponse(f"{PREFIX}/keys?updated={key_id}", status_code=303)


def key_fields(form: dict[str, str]) -> dict[str, Any]:
    """The admin API's create fields from the form: blanks left out, numbers read as numbers."""
    fields: dict[str, Any] = {k: form[k].strip() for k in _TEXTS if form.get(k, "").strip()}
    for name in _NUMBERS:
        raw = form.get(name, "").strip()
        if not raw:
            continue
        try:
            fields[name] = float(raw) if "." in raw or name in ("budget_usd", "expires_days") else int(raw)
        except ValueError:
            raise InvalidRequest(f"{name} must be a number, not {raw!r}.", param=name) from None
    return fields
