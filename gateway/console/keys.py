"""Virtual keys: the list (a non-admin sees its own project's), create (the key shown once), revoke — through the
admin API's own functions, after the same role checks."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.keys import create_key, list_keys, revoke_key, rotate_key
from gateway.console.web import PREFIX, Console
from gateway.errors import InvalidRequest
from gateway.identity import roles
from gateway.identity.keys import ROLES

_NUMBERS = ("rpm", "tpm", "budget_usd", "expires_days")
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
        "revoked": request.query_params.get("revoked", ""),
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
            "project": "", "problem": str(exc.message), "form": form,
        }  # fmt: skip
        return console.render("keys.html", request, context, status=400, session=session)
    context = {"me": me, "title": "Key created", "key": created}
    return console.render("key_created.html", request, context, status=201, session=session)


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
    context = {"me": me, "title": "Key rotated", "key": created}
    return console.render("key_created.html", request, context, status=201, session=session)


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
