"""The policy API. Policies from files are listed read-only; policies created here are kept in the store,
versioned (author and time), and reach every worker and replica through the registry's poll of the store.

GET    /api/v1/policies                      every policy in force: files and API (a non-admin: global ones and
                                              its own project's)
POST   /api/v1/policies                      create: {"policy": {...}} or {"yaml": "..."}; 201
GET    /api/v1/policies/{name}               one policy, with its version when it came from the API
PUT    /api/v1/policies/{name}               a new version: {"policy"|"yaml", "expected_version"?}
DELETE /api/v1/policies/{name}               a deletion (kept in the history)
GET    /api/v1/policies/{name}/versions      the history, newest first
POST   /api/v1/policies/{name}/rollback      {"version": N}: that version's text saved as the newest version
POST   /api/v1/policies/evaluate             a dry run: {"request", "principal"?, "metadata"?, "tokens"?} ->
                                              the decision and every policy's reason
A policy is checked against the whole set before it is saved: one that would not load (a bad regex, a name a file
already uses) is refused with every problem, and nothing is stored.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import yaml

from gateway.api.access import AdminEndpoint, authorize
from gateway.api.http import parse_json_object, read_body
from gateway.context import Principal
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.policy.facts import Facts, request_metadata
from gateway.policy.model import Policy
from gateway.policy.problems import PolicyError
from gateway.store.base import PolicyConflict, PolicyStore, PolicyVersion, policy_store
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.policy.evaluate import PolicySet
    from gateway.runtime import Gateway

_MAX_BODY = 256 * 1024


class PoliciesEndpoint(AdminEndpoint):
    """The HTTP face: each route's role check (gateway/identity/roles.py), then PolicyAdmin's work."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.admin = PolicyAdmin(gateway)

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        method = scope["method"]
        params = scope.get("path_params", {})
        name: str | None = params.get("name")
        action: str | None = params.get("action")
        if name is None:
            if method == "GET":
                principal = await authorize(self.gateway, scope, "GET /api/v1/policies")
                return 200, self.admin.list_policies(principal)
            principal = await authorize(self.gateway, scope, "POST /api/v1/policies")
            return 201, await self.admin.save(None, await self._body(scope, receive), principal.name)
        if name == "evaluate" and method == "POST" and action is None:
            principal = await authorize(self.gateway, scope, "POST /api/v1/policies/evaluate")
            return 200, self.admin.evaluate(await self._body(scope, receive), principal)
        if action == "versions" and method == "GET":
            principal = await authorize(self.gateway, scope, "GET /api/v1/policies/{name}/versions")
            return 200, await self.admin.history(name, principal)
        if action == "rollback" and method == "POST":
            principal = await authorize(self.gateway, scope, "POST /api/v1/policies/{name}/rollback")
            return 200, await self.admin.rollback(name, await self._body(scope, receive), principal.name)
        if action is not None:
            raise NotFound(f"Unknown policy action {action!r}: use versions or rollback.")
        if method == "GET":
            principal = await authorize(self.gateway, scope, "GET /api/v1/policies/{name}")
            return 200, self.admin.one(name, principal)
        principal = await authorize(
            self.gateway, scope, f"{'DELETE' if method == 'DELETE' else 'PUT'} /api/v1/policies/{{name}}"
        )
        if method == "DELETE":
            return 200, await self.admin.delete(name, principal.name)
        return 200, await self.admin.save(name, await self._body(scope, receive), principal.name)

    async def _body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        return parse_json_object(await read_body(scope, receive, _MAX_BODY))


class PolicyAdmin:
    """What the policy API does once the caller's role is checked: the console calls it too."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- reads ----------------------------------------------------------------------------------------------------

    def list_policies(self, principal: Principal) -> dict[str, Any]:
        registry = self.gateway.policies
        data = [self.describe(p) for p in registry.current.policies if _visible(p, principal)]
        return {"object": "list", "data": data, "reload_error": registry.error or None}

    def one(self, name: str, principal: Principal) -> dict[str, Any]:
        for policy in self.gateway.policies.current.policies:
            if policy.name == name and _visible(policy, principal):
                return self.describe(policy)
        raise NotFound(f"No policy {name!r} is in force.")

    def describe(self, policy: Policy) -> dict[str, Any]:
        api = policy.source.startswith("api:")
        version = self.gateway.policies.api_versions.get(policy.name) if api else None
        out: dict[str, Any] = {
            "object": "policy",
            "name": policy.name,
            "description": policy.description,
            "priority": policy.priority,
            "mode": policy.mode,
            "origin": "api" if api else "file",
            "location": policy.location,
            "read_only": not api,
            "fields": sorted(policy.fields()),
            "actions": policy.actions.to_dict(),
        }
        if version is not None:
            out.update(version=version.version, author=version.author, updated_at=version.created_at)
            out["source"] = version.source
        return out

    def evaluate(self, body: dict[str, Any], caller: Principal) -> dict[str, Any]:
        request = body.get("request")
        if not isinstance(request, dict):
            raise InvalidRequest("`request` must be an object: the request body to evaluate.", param="request")
        principal = _principal(body.get("principal") or {})
        if caller.role != "admin":  # a dry run as someone of the caller's own project only
            principal = dataclasses.replace(principal, project=caller.project)
        metadata = body.get("metadata") or {}
        tokens = body.get("tokens", 0)
        if not isinstance(metadata, dict) or isinstance(tokens, bool) or not isinstance(tokens, int):
            raise InvalidRequest("`metadata` must be an object and `tokens` an integer.")
        endpoint = request.get("endpoint", "chat")
        merged = {**request_metadata(request), **{str(k): str(v) for k, v in metadata.items()}}
        facts = Facts.from_request(request, str(endpoint), principal, tokens, merged)
        explanation = self.gateway.policies.current.explain(facts)
        out = {"facts": facts.to_dict(), **explanation.to_dict()}
        if caller.role != "admin":
            visible = {p.name for p in self.gateway.policies.current.policies if _visible(p, caller)}
            out["steps"] = [step for step in out.get("steps", []) if step.get("policy") in visible]
        return out

    # -- writes ---------------------------------------------------------------------------------------------------

    def store(self) -> PolicyStore:
        store = policy_store(self.gateway.store)
        if store is None:
            raise InvalidRequest("Policies created through the API need a store: set telemetry.store.")
        return store

    async def save(self, name: str | None, body: dict[str, Any], author: str) -> dict[str, Any]:
        source, parsed = _source(body, name)
        registry = self.gateway.policies
        if name is None and any(p.name == parsed.name for p in registry.current.policies):
            raise Conflict(f"A policy named {parsed.name!r} exists: PUT /api/v1/policies/{parsed.name} changes it.")
        if any(p.name == parsed.name and not p.source.startswith("api:") for p in registry.file_policies):
            raise Conflict(f"The policy {parsed.name!r} comes from a file and is read-only here.")
        expected = body.get("expected_version")
        if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
            raise InvalidRequest("`expected_version` must be an integer.", param="expected_version")
        if name is None:
            expected = 0
        self.check_loads(parsed.name, source)
        try:
            version = await self.store().save_policy(parsed.name, source, author=author, expected_version=expected)
        except PolicyConflict as exc:
            raise Conflict(str(exc) or f"The policy {parsed.name!r} changed since version {expected}.") from None
        await registry.refresh()
        return _version(version)

    async def delete(self, name: str, author: str) -> dict[str, Any]:
        if any(p.name == name for p in self.gateway.policies.file_policies):
            raise Conflict(f"The policy {name!r} comes from a file and is read-only here.")
        version = await self.store().delete_policy(name, author=author)
        if version is None:
            raise NotFound(f"No policy {name!r} was created through the API.")
        await self.gateway.policies.refresh()
        return _version(version)

    async def rollback(self, name: str, body: dict[str, Any], author: str) -> dict[str, Any]:
        wanted = body.get("version")
        if isinstance(wanted, bool) or not isinstance(wanted, int):
            raise InvalidRequest("`version` must be the integer version to bring back.", param="version")
        history = await self.store().policy_history(name)
        old = next((v for v in history if v.version == wanted), None)
        if old is None or old.deleted:
            raise NotFound(f"Policy {name!r} has no version {wanted} to roll back to.")
        self.check_loads(name, old.source)
        version = await self.store().save_policy(name, old.source, author=author)
        await self.gateway.policies.refresh()
        return {**_version(version), "rolled_back_to": wanted}

    async def history(self, name: str, principal: Principal) -> dict[str, Any]:
        if principal.role != "admin":
            self.one(name, principal)  # 404 unless the policy is in force and visible to the caller
        return {"object": "list", "data": [_version(v) for v in await self.store().policy_history(name)]}

    def check_loads(self, name: str, source: str) -> PolicySet:
        """The set as it would be with this policy saved: refused now rather than failing every reload later."""
        registry = self.gateway.policies
        candidate = dict(registry.api_versions)
        candidate[name] = PolicyVersion(name=name, version=0, source=source, author="", created_at=0.0)
        try:
            return registry.compose(candidate)
        except PolicyError as exc:
            raise _invalid(exc) from None


def _source(body: dict[str, Any], name: str | None) -> tuple[str, Policy]:
    """The policy as stored (YAML: a list of one mapping) and parsed, from {"policy": {...}} or {"yaml": "..."}."""
    from gateway.policy.loader import parse_policies

    if isinstance(body.get("yaml"), str):
        try:
            data = yaml.safe_load(body["yaml"])
        except yaml.YAMLError as exc:
            raise InvalidRequest(f"`yaml` is not valid YAML: {exc}", param="yaml") from None
    else:
        data = body.get("policy")
    if isinstance(data, dict) and isinstance(data.get("policies"), list) and len(data["policies"]) == 1:
        data = data["policies"][0]
    if not isinstance(data, dict):
        raise InvalidRequest('Send one policy: {"policy": {...}} or {"yaml": "..."}.', param="policy")
    if name is not None:
        data.setdefault("name", name)
        if data["name"] != name:
            raise InvalidRequest(f"The policy's name {data['name']!r} differs from the URL's {name!r}.")
    source = yaml.safe_dump([data], sort_keys=False, allow_unicode=True)
    try:
        parsed = parse_policies(source, f"api:{data.get('name', '?')}")
    except PolicyError as exc:
        raise _invalid(exc) from None
    return source, parsed[0]


def _invalid(exc: PolicyError) -> InvalidRequest:
    problems = [f"{p.key_path}: {p.message}" if p.key_path else p.message for p in exc.problems]
    return InvalidRequest("The policy does not load: " + "; ".join(problems), code="invalid_policy")


def _principal(data: Any) -> Principal:
    if not isinstance(data, dict):
        raise InvalidRequest("`principal` must be an object.", param="principal")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("`principal.metadata` must be an object.", param="principal.metadata")

    def text(name: str, default: str = "") -> str:
        value = data.get(name)
        return str(value) if value not in (None, "") else default

    return Principal(
        name=text("name", "evaluate"),
        key_id=text("key_id") or text("key"),
        project=text("project", "default"),
        team=text("team"),
        user=text("user"),
        role=text("role", "developer"),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def _visible(policy: Policy, principal: Principal) -> bool:
    """Project isolation: an admin sees every policy; others see global ones and those whose `match` names their
    project exactly. A policy that reads the project any other way (a glob, a `when` condition) is admin-only:
    which projects it concerns cannot be told without evaluating it."""
    if principal.role == "admin":
        return True
    if "project" not in policy.fields():
        return True
    if "project" in dataclasses.replace(policy, match=()).fields():
        return False
    for condition in policy.match:
        if condition.field != "project":
            continue
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        if condition.op not in ("eq", "in") or principal.project not in values:
            return False
    return True


def _version(version: PolicyVersion) -> dict[str, Any]:
    return {
        "object": "policy.version",
        "name": version.name,
        "version": version.version,
        "author": version.author,
        "created_at": version.created_at,
        "deleted": version.deleted,
        "source": version.source,
    }
