"""GET /api/v1/analytics/similarity?project=&since=: how many requests repeated an earlier prompt exactly or nearly,
that is, what an exact or a semantic cache would have served, from the prompt-similarity log.

Admins read any project (or all, without `project`); everyone else the matrix lets in reads their own project.
`since` is epoch seconds (default: the last 24 hours).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from gateway.api.access import AdminEndpoint, authorize
from gateway.errors import InvalidRequest
from gateway.types import Receive, Scope

_DAY_S = 86_400.0


class SimilarityAnalyticsEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        principal = await authorize(self.gateway, scope, "GET /api/v1/analytics/similarity")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        project: str | None = query.get("project") or None
        if principal.role != "admin":
            project = principal.project  # project isolation: only an admin chooses
        try:
            since = float(query.get("since") or time.time() - _DAY_S)
        except ValueError:
            raise InvalidRequest("since must be epoch seconds.", param="since") from None
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
        gateway = self.gateway
        status: dict[str, Any] = {"object": "telemetry_status", "records": gateway.queue.stats()}
        if gateway.event_queue is not None:
            status["events"] = gateway.event_queue.stats()
        worker = gateway.similarity
        if worker is not None:
            status["similarity"] = {"processed": worker.processed, "dropped": worker.dropped}
        return 200, status
