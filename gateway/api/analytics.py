"""GET /api/v1/analytics/similarity?project=&since=: how many requests repeated an earlier prompt exactly or nearly,
that is, what an exact or a semantic cache would have served, from the prompt-similarity log. And
GET /api/v1/analytics/{costs,usage,performance,errors,models}: the records as time series (TimeseriesEndpoint).

Admins read any project (or all, without `project`); everyone else the matrix lets in reads their own project.
`since` is epoch seconds, or negative: seconds before now (default: the last 24 hours).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, get_args

from gateway.api.access import AdminEndpoint, authorize, require_traces, visible_project
from gateway.api.http import query_params, time_range
from gateway.errors import InvalidRequest, NotFound
from gateway.store.analytics_sql import MAX_BUCKETS, GroupBy, Kind, parse_interval
from gateway.types import Receive, Scope

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway


class SimilarityAnalyticsEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        principal = await authorize(self.gateway, scope, "GET /api/v1/analytics/similarity")
        query = query_params(scope)
        project = visible_project(principal, query.get("project") or None)
        since, _ = time_range(query)
        stats = getattr(self.gateway.store, "similarity_stats", None)
        if stats is None or self.gateway.similarity is None:
            raise InvalidRequest("Prompt similarity is off: set similarity.enabled and telemetry.store.")
        figures: dict[str, Any] = await stats(project, since)
        return 200, {"object": "similarity_stats", "project": project, "since": since, **figures}


class TelemetryStatusEndpoint(AdminEndpoint):
    """GET /api/v1/telemetry/status: the telemetry queues — records waiting, written, dropped — and the
    similarity worker, so that an operator sees a sink falling behind before records are lost."""

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        await authorize(self.gateway, scope, "GET /api/v1/telemetry/status")
        return 200, telemetry_status(self.gateway)


def telemetry_status(gateway: Gateway) -> dict[str, Any]:
    """The record queue, each sink's outbox and spool, events and similarity (the console's Health page too)."""
    status: dict[str, Any] = {"object": "telemetry_status", "records": gateway.queue.stats()}
    # Each of the store and the sinks: its own queue, its spool, what it sent, retried and dropped.
    status["sinks"] = {outbox.name: outbox.stats() for outbox in gateway.outboxes}
    status["features"] = {"error": gateway.features.error or None}
    if gateway.event_queue is not None:
        status["events"] = gateway.event_queue.stats()
    worker = gateway.similarity
    if worker is not None:
        status["similarity"] = {"processed": worker.processed, "dropped": worker.dropped}
    return status


class TimeseriesEndpoint(AdminEndpoint):
    """GET /api/v1/analytics/{kind}?interval=&group_by=&since=&until=&project=: the records summed per time bucket
    (floor(ts / interval) * interval) and group. kind: costs, usage, performance (avg, max, p50 and p95 latency),
    errors, models. interval: 1m, 5m, 1h, 1d or seconds (default 1h); since/until: epoch seconds or, negative,
    seconds before now (default: the last 24 hours). Project isolation as for the similarity figures."""

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        principal = await authorize(self.gateway, scope, "GET /api/v1/analytics/{kind}")
        kind = scope.get("path_params", {}).get("kind", "")
        return 200, await timeseries(self.gateway, principal, kind, query_params(scope))


async def timeseries(gateway: Gateway, principal: Principal, kind: str, query: dict[str, str]) -> dict[str, Any]:
    """One kind of figures per time bucket and group, held to the principal's project (the console's charts too);
    the caller has checked the role."""
    if kind not in get_args(Kind):
        raise NotFound(f"No analytics {kind!r}: one of similarity, {', '.join(get_args(Kind))}.", param="kind")
    project = visible_project(principal, query.get("project") or None)
    since, until = time_range(query)
    interval_s = parse_interval(query.get("interval") or "1h")
    if (until - since) / interval_s > MAX_BUCKETS:
        raise InvalidRequest(f"More than {MAX_BUCKETS} buckets: widen the interval.", param="interval")
    group_by = cast(GroupBy, query.get("group_by") or "none")
    if group_by not in get_args(GroupBy):
        raise InvalidRequest(f"group_by must be one of {', '.join(get_args(GroupBy))}.", param="group_by")
    data = await require_traces(gateway).timeseries(
        cast(Kind, kind), interval_s=interval_s, group_by=group_by, since=since, until=until, project=project
    )
    return {
        "object": "analytics.timeseries",
        "kind": kind,
        "interval": interval_s,
        "group_by": group_by,
        "project": project,
        "since": since,
        "until": until,
        "data": data,
    }
