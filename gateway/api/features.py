"""Feature flags over HTTP (gateway/flags.py):

    GET    /api/v1/features?project=p          every flag's value for p (or the global ones) and where it comes from
    PUT    /api/v1/features/{flag}             {"value": true | false | "off" | "redacted" | "full", "project": "p"}
    DELETE /api/v1/features/{flag}?project=p   remove the API's override: the config's value applies again

Everyone the matrix lets read sees their own project's values (admins: any project, or the global ones); only
admins change them. A change applies in the worker that took it at once, in the others within
features.poll_interval_s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.api.access import AdminEndpoint, authorize, visible_project
from gateway.api.http import parse_json_object, query_params, read_body
from gateway.config.telemetry import flag_problem
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway

_MAX_BODY = 64 * 1024


class FeaturesEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        method = scope["method"]
        flag = scope.get("path_params", {}).get("flag")
        query = query_params(scope)
        if method == "GET":
            principal = await authorize(self.gateway, scope, "GET /api/v1/features")
            return 200, feature_flags(self.gateway, principal, query.get("project") or None)
        principal = await authorize(self.gateway, scope, f"{method} /api/v1/features/{{flag}}")
        assert flag is not None
        if method == "PUT":
            body = parse_json_object(await read_body(scope, receive, _MAX_BODY))
            value, project = body.get("value"), body.get("project", "")
            if not isinstance(project, str):
                raise InvalidRequest("project must be a string.", param="project")
            return 200, await set_feature(self.gateway, principal, flag, value, project, remove=False)
        return 200, await set_feature(self.gateway, principal, flag, None, query.get("project", ""), remove=True)


# What the API and the console do once the role is checked (gateway/identity/roles.py).


def feature_flags(gateway: Gateway, principal: Principal, project: str | None) -> dict[str, Any]:
    shown = visible_project(principal, project)
    return {"object": "features", "project": shown, "flags": gateway.features.snapshot(shown)}


async def set_feature(
    gateway: Gateway, principal: Principal, flag: str, value: Any, project: str, *, remove: bool
) -> dict[str, Any]:
    """Set a flag's value for a project ("": the global value), or remove the API's override (`remove`)."""
    features = gateway.features
    if features.store is None:
        raise ServiceUnavailable("Feature flags set through the API need a store (telemetry.store).")
    if not remove:
        problem = flag_problem(flag, value, features.sinks)
        if problem:
            raise InvalidRequest(f"{flag}: {problem}.", param="value" if "unknown" not in problem else "flag")
    assert value is None or isinstance(value, bool | str)  # flag_problem let nothing else through
    await features.set(flag, value, project=project, author=principal.name)
    return {"object": "feature", "flag": flag, "project": project or None, **features.snapshot(project)[flag]}
