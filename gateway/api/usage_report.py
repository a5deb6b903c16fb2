"""GET /api/v1/usage?by=key|team|project&since=&until=&project=: requests, tokens, cost and errors per key, team or
project over a time range, summed from the request records (the store), the costliest first. Unlike /admin/usage
(the live budget counters) this is history: what was spent, not what is left.

Admins read every project, or one with `project`; everyone else the matrix lets in reads their own project.
since/until are epoch seconds, or negative: seconds before now (default: the last 24 hours).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, get_args

from gateway.api.access import AdminEndpoint, authorize, require_traces, visible_project
from gateway.api.http import query_params, time_range
from gateway.errors import InvalidRequest
from gateway.store.analytics_sql import UsageBy
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway


class UsageReportEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        principal = await authorize(self.gateway, scope, "GET /api/v1/usage")
        return 200, await usage_report(self.gateway, principal, query_params(scope))


async def usage_report(gateway: Gateway, principal: Principal, query: dict[str, str]) -> dict[str, Any]:
    """The sums per key, team or project, held to the principal's project; the caller has checked the role."""
    by = cast(UsageBy, query.get("by") or "project")
    if by not in get_args(UsageBy):
        raise InvalidRequest(f"by must be one of {', '.join(get_args(UsageBy))}.", param="by")
    project = visible_project(principal, query.get("project") or None)
    since, until = time_range(query)
    data = await require_traces(gateway).usage_summary(by, since=since, until=until, project=project)
    return {"object": "list", "by": by, "project": project, "since": since, "until": until, "data": data}
