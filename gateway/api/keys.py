"""Admin endpoints for virtual keys. The key itself is in the answer to create and rotate, and nowhere else.

GET  /admin/keys                 list (no secrets); a non-admin sees its own project only
POST /admin/keys                 create: {name, project, team, user, role, allowed_models, rpm, tpm,
                                  budget_usd ("50/month" or a number), budget_period, expires_days, metadata}
POST /admin/keys/{id}/rotate     a new key with the same attributes; the old one is revoked after
                                  {"grace_s": N} (default 0: at once, at most a week)
POST /admin/keys/{id}/revoke     revoked at once; other workers drop it within auth.cache_ttl_s
PATCH /admin/keys/{id}           change its {name, allowed_models, rpm, tpm, budget_usd, budget_period, metadata}
                                  (the fields given; not project, team, user or role); the key itself is unchanged
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.api.access import AdminEndpoint, authorize, visible_project
from gateway.api.http import parse_json_object, query_params, read_body
from gateway.errors import InvalidRequest, NotFound
from gateway.identity.keys import edited, issue, successor
from gateway.store.base import KeyStore, key_store
from gateway.store.rows import VirtualKey
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway

MAX_GRACE_S = 7 * 86400
_MAX_BODY = 64 * 1024


class KeysEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        params = scope.get("path_params", {})
        key_id, action = params.get("key_id"), params.get("action")
        if scope["method"] == "GET":
            principal = await authorize(self.gateway, scope, "GET /admin/keys")
            return 200, await list_keys(self.gateway, principal, query_params(scope).get("project"))
        if scope["method"] == "PATCH" and key_id is not None and action is None:
            await authorize(self.gateway, scope, "PATCH /admin/keys/{id}")
            return 200, await update_key(self.gateway, key_id, await self._body(scope, receive))
        if key_id is None:
            await authorize(self.gateway, scope, "POST /admin/keys")
            return 201, await create_key(self.gateway, await self._body(scope, receive))
        if action not in ("rotate", "revoke"):
            raise NotFound(f"Unknown action {action!r}: use rotate or revoke.")
        await authorize(self.gateway, scope, f"POST /admin/keys/{{id}}/{action}")
        body = await self._body(scope, receive, optional=True)
        if action == "revoke":
            return 200, await revoke_key(self.gateway, key_id)
        return 200, await rotate_key(self.gateway, key_id, body)

    async def _body(self, scope: Scope, receive: Receive, *, optional: bool = False) -> dict[str, Any]:
        raw = await read_body(scope, receive, _MAX_BODY)
        if optional and not raw.strip():
            return {}
        return parse_json_object(raw)


# What the API and the console do once the role is checked (gateway/identity/roles.py): one place each.


def _store(gateway: Gateway) -> KeyStore:
    store = key_store(gateway.store)
    if store is None:
        raise InvalidRequest("Virtual keys need a store: set telemetry.store.")
    return store


async def list_keys(gateway: Gateway, principal: Principal, project: str | None) -> dict[str, Any]:
    keys = await _store(gateway).list_keys(project=visible_project(principal, project))
    return {"object": "list", "data": [k.public() for k in keys]}


async def create_key(gateway: Gateway, fields: dict[str, Any]) -> dict[str, Any]:
    key, row = issue(fields)
    await _store(gateway).create_key(row)
    return {**row.public(), "key": key}


async def revoke_key(gateway: Gateway, key_id: str) -> dict[str, Any]:
    row = await _store(gateway).revoke_key(key_id, at=time.time())
    if row is None:
        raise NotFound(f"No key {key_id!r}.")
    _forget(gateway, row.key_hash)
    return row.public()


async def rotate_key(gateway: Gateway, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    grace = body.get("grace_s", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= MAX_GRACE_S:
        raise InvalidRequest(f"grace_s must be a number of seconds from 0 to {MAX_GRACE_S}.", param="grace_s")
    store = _store(gateway)
    old = await get_key(gateway, key_id)
    if old.revoked_at is not None and old.revoked_at <= time.time():
        raise InvalidRequest(f"The key {key_id!r} is revoked: create a new one instead.")
    key, new = successor(old)
    if await store.rotate_key(key_id, new, revoke_at=time.time() + grace) is None:
        raise NotFound(f"No key {key_id!r}.")
    _forget(gateway, old.key_hash)
    return {**new.public(), "key": key}


async def get_key(gateway: Gateway, key_id: str) -> VirtualKey:
    key = await _store(gateway).get_key(key_id)
    if key is None:
        raise NotFound(f"No key {key_id!r}.")
    return key


async def update_key(gateway: Gateway, key_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    store = _store(gateway)
    old = await get_key(gateway, key_id)
    now = time.time()
    if old.revoked_at is not None and old.revoked_at <= now:
        raise InvalidRequest(f"The key {key_id!r} is revoked: create a new one instead.")
    row = await store.update_key(edited(old, fields), now=now)
    if row is None:
        raise InvalidRequest(f"The key {key_id!r} was revoked meanwhile.")
    _forget(gateway, row.key_hash)
    return row.public()


def _forget(gateway: Gateway, digest: str) -> None:
    # This worker sees the change at once; the others within auth.cache_ttl_s.
    cache = gateway.identity.cache
    if cache is not None:
        cache.invalidate(digest)
