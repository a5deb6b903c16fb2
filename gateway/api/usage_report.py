"""GET /api/v1/usage?by=key|team|project&since=&until=&project=: requests, tokens, cost and errors per key, team or
project over a time range, summed from the request records (the store), the costliest first. Unlike /admin/usage
(the live budget counters) this is history: what was spent, not what is left.

Admins read every project, or one with `project`; everyone else the matrix lets in reads their own project.
since/until are epoch seconds (default: the last 24 hours).
"""

from __future__ import annotations

from typing import Any, cast, get_args
from urllib.parse import parse_qsl

from gateway.api.access import AdminEndpoint, authorize
from gateway.api.analytics import own_project, time_range
from gateway.errors import InvalidRequest
from gateway.store.base import trace_store
from gateway.store.trace_query import UsageBy
from gateway.types import Receive, Scope


class UsageReportEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        principal = await authorize(self.gateway, scope, "GET /api/v1/usage")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        by = cast(UsageBy, query.get("by") or "project")
        if by not in get_args(UsageBy):
            raise InvalidRequest(f"by must be one of {', '.join(get_args(UsageBy))}.", param="by")
        project = own_project(principal, query.get("project") or None)
        since, until = time_range(query)
        store = trace_store(self.gateway.store)
        if store is None:
            raise InvalidRequest("No store keeps the records: set telemetry.store.")
        data = await store.usage_summary(by, since=since, until=until, project=project)
        return 200, {
            "object": "list",
            "by": by,
            "project": project,
            "since": since,
            "until": until,
            "data": data,
        }
