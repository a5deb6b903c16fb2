"""POST /admin/usage/reset {"scope", "id"} (admins): the budgets of one key, team or project start their period anew.

GET /admin/usage?scope=key|team|project&id=...: the spend of the current period against each budget, and what is
left of the rate limits, for one key, team or project — read from the counters that the ratelimit filter reserves
on (gateway/state/ratelimits.py), without reserving anything. Without `id`, the caller's own key, team or
project; `scope` defaults to project.

Admins read any scope. Everyone else the matrix lets in stays in their own project: their project, their own
team (a team's counters are not tied to a project, so another team's name proves nothing) or a key of their
project.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from gateway.api.access import AdminEndpoint, authorize
from gateway.api.http import parse_json_object, query_params, read_body
from gateway.config import LimitRule
from gateway.errors import InvalidRequest, NotFound, PermissionDenied
from gateway.identity.keys import principal_of
from gateway.state.limiter import BUDGET, CONCURRENCY, REQUESTS, TOKENS
from gateway.state.ratelimits import own_rule
from gateway.store.base import key_store
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway

SCOPES = ("key", "team", "project")
_MAX_BODY = 64 * 1024


class UsageEndpoint(AdminEndpoint):
    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.usage = Usage(gateway)

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope["method"] == "POST":
            principal = await authorize(self.gateway, scope, "POST /admin/usage/reset")
            body = parse_json_object(await read_body(scope, receive, _MAX_BODY))
            return 200, await self.usage.reset(principal, body)
        principal = await authorize(self.gateway, scope, "GET /admin/usage")
        return 200, await self.usage.read(principal, query_params(scope))


class Usage:
    """What GET /admin/usage does once the role is checked (the console's budgets too)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.limits = gateway.rate_limits  # the counters the ratelimit filter reserves on; None without it

    async def read(self, principal: Principal, query: dict[str, str]) -> dict[str, Any]:
        which = query.get("scope", "project")
        if which not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}, not {which!r}.", param="scope")
        ident = query.get("id") or _own(principal, which)
        if not ident:
            raise InvalidRequest(f"The caller has no {which}: pass id.", param="id")
        ident, name, own = await self._authorize(principal, which, ident)
        now = time.time()
        budgets: list[dict[str, Any]] = []
        rate_limits: list[dict[str, Any]] = []
        # Without the ratelimit filter nothing is capped or counted: empty lists say exactly that.
        counters = await self.limits.usage(which, ident, own, name) if self.limits is not None else []
        for check, period, taken in counters:
            if check.kind == BUDGET:
                budgets.append({
                    "period": period,
                    "spend_usd": round(taken, 6),
                    "cap_usd": check.limit,
                    # Settling the real cost can take a request past the cap; what is left is then nothing.
                    "remaining_usd": round(max(0.0, check.limit - taken), 6),
                    "resets_at": round(now + check.window_ms / 1000),
                })  # fmt: skip
            else:
                name = {REQUESTS: "rpm", TOKENS: "tpm"}.get(check.header, "concurrency")
                capacity = check.limit if check.kind == CONCURRENCY else check.capacity
                rate_limits.append(
                    {"name": name, "limit": check.limit, "remaining": max(0, math.floor(capacity - taken))}
                )
        return {"object": "usage", "scope": which, "id": ident, "budgets": budgets, "rate_limits": rate_limits}

    async def reset(self, principal: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """Start the current period of the budgets on one key, team or project anew (POST /admin/usage/reset,
        admins): the spend counted so far is forgotten, and a `usage_reset` event says who did it and what it was."""
        which, ident = fields.get("scope", "project"), fields.get("id")
        if which not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}.", param="scope")
        if not isinstance(ident, str) or not ident:
            raise InvalidRequest("id must name the key, team or project.", param="id")
        if self.limits is None:
            raise InvalidRequest("Nothing is counted: the pipeline has no ratelimit filter.")
        ident, name, own = await self._authorize(principal, which, ident)
        reset = await self.limits.reset_budgets(which, ident, own, name)
        if not reset:
            raise InvalidRequest(f"No budget applies to the {which} {ident!r}.", param="id")
        budgets = [{"period": period, "spend_usd_before": round(spent, 6)} for period, spent in reset]
        self.gateway.events.emit("usage_reset", scope=which, id=ident, by=principal.name, budgets=budgets)
        return {"object": "usage.reset", "scope": which, "id": ident, "budgets": budgets}

    async def _authorize(self, principal: Principal, which: str, ident: str) -> tuple[str, str, LimitRule | None]:
        """PermissionDenied outside the caller's project (unless admin). (id, name, own limits as a rule) of the
        key, team or project: a key's name matters to rules that match it by name; a config key may be named by
        its name or its id."""
        admin = principal.role == "admin"
        if which == "project":
            if not admin and ident != principal.project:
                raise _other_project(which, ident)
            return ident, "", None
        if which == "team":
            if not admin and ident != principal.team:
                raise _other_project(which, ident)
            return ident, "", None
        if ident == (principal.key_id or principal.name):
            return ident, principal.name, own_rule(principal)
        # Another key: its row says which project it is in and what budget it carries. Config keys have none.
        store = key_store(self.gateway.store)
        row = await store.get_key(ident) if store is not None else None
        if row is not None:
            if not admin and row.project != principal.project:
                raise _other_project(which, ident)
            key = principal_of(row)
            return ident, key.name, own_rule(key)
        principals = self.gateway.identity.principals.values()
        config_key = next((p for p in principals if ident in (p.key_id, p.name) and p.source == "config"), None)
        if config_key is None:
            raise NotFound(f"No key {ident!r}.", param="id")
        if not admin and config_key.project != principal.project:
            raise _other_project(which, ident)
        return config_key.key_id, config_key.name, None


def _own(principal: Principal, which: str) -> str:
    if which == "key":
        return principal.key_id or principal.name
    return principal.team if which == "team" else principal.project


def _other_project(which: str, ident: str) -> PermissionDenied:
    return PermissionDenied(f"The {which} {ident!r} is outside your project.", code="project_not_allowed")
