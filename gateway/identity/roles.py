"""Who may call what: the permission matrix, one route to the roles allowed on it.

A route missing from the matrix is open to admins only, so a new endpoint is closed until someone decides.
README.md's "Identity and roles" shows this table; tests/integration/test_roles.py checks it route by route.
"""

from __future__ import annotations

from gateway.context import Principal
from gateway.errors import PermissionDenied

ADMIN = frozenset({"admin"})
DEVELOPER = frozenset({"admin", "developer"})
READERS = frozenset({"admin", "viewer"})
BILLING = frozenset({"admin", "billing"})
EVERY_ROLE = frozenset({"admin", "developer", "viewer", "billing"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "POST /v1/chat/completions": DEVELOPER,
    "POST /v1/completions": DEVELOPER,
    "POST /v1/embeddings": DEVELOPER,
    "POST /v1/messages": DEVELOPER,
    "POST /v1/messages/count_tokens": DEVELOPER,
    "POST /v1/responses": DEVELOPER,
    # The responses an application stored (own project): the application's own conversation state.
    "GET /v1/responses/{id}": DEVELOPER,
    "DELETE /v1/responses/{id}": DEVELOPER,
    "GET /v1/responses/{id}/input_items": DEVELOPER,
    "GET /v1/models": DEVELOPER,
    "GET /admin/deployments": READERS,
    "POST /admin/deployments/{id}/{action}": ADMIN,
    # Non-admins see their own project's keys only (without secrets): viewers audit, billing maps spend to keys.
    "GET /admin/keys": EVERY_ROLE - {"developer"},
    "POST /admin/keys": ADMIN,
    "POST /admin/keys/{id}/rotate": ADMIN,
    "POST /admin/keys/{id}/revoke": ADMIN,
    # A key's models, rate limits, budget, name and metadata changed in place (not its project, team, user or role:
    # who a key is stays as it was made).
    "PATCH /admin/keys/{id}": ADMIN,
    # A key's, team's or project's budgets and rate limits, as its counters stand.
    "GET /admin/usage": BILLING,
    # A budget's period started anew (its spend forgotten, an event left): admins only.
    "POST /admin/usage/reset": ADMIN,
    # Cached answers removed (a project's, a model's, one entry): admins only.
    "POST /admin/cache/purge": ADMIN,
    # What an exact or semantic cache would have served, from the prompt-similarity log (own project).
    "GET /api/v1/analytics/similarity": READERS | BILLING,
    "GET /api/v1/telemetry/status": READERS,
    # Traces carry prompts and answers (content logging): readers only, own project. Not developers: a developer key
    # is an application's credential, and a leaked one must not read what every other user of the project sent.
    "GET /api/v1/traces": READERS,
    "GET /api/v1/traces/{id}": READERS,
    "GET /api/v1/traces/{id}/export": READERS,
    "GET /api/v1/traces/export": READERS,
    # Figures without content (costs, tokens, latency, errors): readers and billing, own project.
    "GET /api/v1/analytics/{kind}": READERS | BILLING,
    "GET /api/v1/usage": READERS | BILLING,
    # Policies: viewers audit what is in force (their project's and the global ones); only admins change them.
    "GET /api/v1/traces/tail": READERS,  # the live tail (WebSocket), with the filters of GET /api/v1/traces
    # Feature flags: readers see their project's values; only admins switch a capability.
    "GET /api/v1/features": READERS,
    "PUT /api/v1/features/{flag}": ADMIN,
    "DELETE /api/v1/features/{flag}": ADMIN,
    "GET /api/v1/policies": READERS,
    "GET /api/v1/policies/{name}": READERS,
    "GET /api/v1/policies/{name}/versions": READERS,
    "POST /api/v1/policies/evaluate": READERS,
    "POST /api/v1/policies": ADMIN,
    "PUT /api/v1/policies/{name}": ADMIN,
    "DELETE /api/v1/policies/{name}": ADMIN,
    "POST /api/v1/policies/{name}/rollback": ADMIN,
}

# RequestContext.endpoint of the pipeline's routes -> their matrix entry.
V1_ROUTES: dict[str, str] = {
    "chat/completions": "POST /v1/chat/completions",
    "completions": "POST /v1/completions",
    "embeddings": "POST /v1/embeddings",
    "messages": "POST /v1/messages",
    "anthropic": "POST /v1/messages",  # by the ingress's tags.api: the pipeline serves them as chat/completions
    "responses": "POST /v1/responses",
    "messages/count_tokens": "POST /v1/messages/count_tokens",
    "models": "GET /v1/models",
}


def allows(route: str, role: str) -> bool:
    return role in PERMISSIONS.get(route, ADMIN)


def require(route: str, principal: Principal) -> None:
    if not allows(route, principal.role):
        raise PermissionDenied(f"The role {principal.role!r} may not call {route}.", code="role_not_allowed")
