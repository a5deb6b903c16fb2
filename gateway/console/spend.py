"""Spend and usage: requests, cost, tokens, errors and latency over time, grouped by model, project, key or team,
and the sums per key, team or project — the analytics API's functions, after the same role checks. One page view
is one request; the figures come from four time-series queries and one summary, run at once on the server, over
whole hours (the usage rollups)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.analytics import timeseries
from gateway.api.usage import Usage
from gateway.api.usage_report import usage_report
from gateway.console.charts import chart
from gateway.console.web import PREFIX, Console
from gateway.errors import InvalidRequest
from gateway.identity import roles
from gateway.store.analytics_sql import parse_interval
from gateway.store.base import StoreUnavailable

SLOW = (
    "The store did not answer in time for these figures (telemetry.query_timeout_s): choose a shorter range or one"
    " project."
)
# (since, label, bucket interval)
RANGES = [("-86400", "Last 24 hours", "1h"), ("-604800", "Last 7 days", "6h"), ("-2592000", "Last 30 days", "1d")]
GROUPS = [("none", "Nothing"), ("model", "Model"), ("project", "Project"), ("key", "Key"), ("team", "Team")]
# (title, analytics kind, figure, adds up, format)
METRICS = [
    ("Requests", "costs", "requests", True, "count"),
    ("Cost", "costs", "cost_usd", True, "usd"),
    ("Tokens", "usage", "total_tokens", True, "count"),
    ("Errors", "errors", "errors", True, "count"),
    ("Latency p50", "performance", "p50_latency_ms", False, "ms"),
    ("Latency p95", "performance", "p95_latency_ms", False, "ms"),
]


async def spend_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /api/v1/analytics/{kind}", me)
    roles.require("GET /api/v1/usage", me)
    params = request.query_params
    since = params.get("since") or RANGES[0][0]
    interval = next((r[2] for r in RANGES if r[0] == since), None)
    if interval is None:
        raise InvalidRequest("Choose one of the time ranges.", param="since")
    group_by = params.get("group_by") or "none"
    if group_by not in dict(GROUPS) or (group_by == "project" and me.role != "admin"):
        raise InvalidRequest("Choose one of the groupings.", param="group_by")
    # Whole buckets, the last one still going: the first is not cut short, and the usage rollups answer alone (the
    # daily ones for the 30 days' daily buckets: gateway/store/rollup_sql.py).
    now, step = time.time(), parse_interval(interval)
    start, end = math.floor((now + float(since)) / step) * step, math.ceil(now / step) * step
    query = {"since": str(start), "until": str(end), "interval": interval, "group_by": group_by,
             "project": params.get("project", "")}  # fmt: skip
    kinds = list(dict.fromkeys(m[1] for m in METRICS))
    # The queries at once: PostgreSQL runs them on as many pooled connections (SQLite one after the other).
    by = "team" if group_by == "team" else "project" if me.role == "admin" and group_by != "key" else "key"
    charts: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"data": []}
    problem, status = "", 200
    answers = await asyncio.gather(
        *(timeseries(console.gateway, me, kind, query) for kind in kinds),
        usage_report(console.gateway, me, {"by": by, **{k: query[k] for k in ("since", "until", "project")}}),
        return_exceptions=True,  # each query is awaited to its end, whichever fails
    )
    results: list[dict[str, Any]] = []
    for answer in answers:
        if isinstance(answer, StoreUnavailable):
            problem, status = SLOW, 503  # past telemetry.query_timeout_s: the page stays, with what to try instead
        elif isinstance(answer, BaseException):
            raise answer
        else:
            results.append(answer)
    if not problem:
        *series, summary = results
        figures = dict(zip(kinds, series, strict=True))
        for title, kind, field, additive, fmt in METRICS:
            f = figures[kind]
            drawn = chart(
                f["data"], field, since=f["since"], until=f["until"], interval=f["interval"], additive=additive
            )
            charts.append({"title": title, "format": fmt, "additive": additive, **drawn})
    budgets = None
    if roles.allows("GET /admin/usage", me.role) and (query["project"] or me.role != "admin"):
        budgets = await Usage(console.gateway).read(me, {"scope": "project", "id": query["project"] or me.project})
    context = {
        "me": me,
        "title": "Spend",
        "budgets": budgets,
        "can_reset": roles.allows("POST /admin/usage/reset", me.role),
        "reset": params.get("reset", ""),
        "charts": charts,
        "problem": problem,
        "summary": summary["data"],
        "by": by,
        "since": since,
        "start": start,
        "bucket": {"1h": "hour", "6h": "6 hours", "1d": "day"}[interval],
        "group_by": group_by,
        "project": query["project"],
        "ranges": RANGES,
        "groups": [g for g in GROUPS if g[0] != "project" or me.role == "admin"],
        "is_admin": me.role == "admin",
    }
    return console.render("spend.html", request, context, status=status, session=session)


async def reset(console: Console, request: Request) -> Response:
    """Start a project's budgets anew (admins): POST /admin/usage/reset's work, which leaves an event."""
    session, me = await console.session(request.scope)
    roles.require("POST /admin/usage/reset", me)
    form = await console.form(request, session)
    project = form.get("project", "")
    await Usage(console.gateway).reset(me, {"scope": "project", "id": project})
    target = f"{PREFIX}/spend?{urlencode({'project': project, 'since': form.get('since', ''), 'reset': project})}"
    return RedirectResponse(target, status_code=303)
