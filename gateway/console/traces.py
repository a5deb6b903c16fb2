"""The trace viewer: a filter bar over GET /api/v1/traces's filters (in the URL, so a view can be shared), pages by
the store's cursor, a trace's page, and export of the current filter through the API's export code."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.tail import TailEndpoint
from gateway.api.traces import TraceExportEndpoint, list_traces, one_trace
from gateway.console.web import Console, SignInRequired
from gateway.context import Principal
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.identity import roles
from gateway.types import Scope

# The relative time ranges: the API reads a negative `since` as seconds before now.
RANGES = [("-900", "Last 15 minutes"), ("-3600", "Last hour"), ("-86400", "Last 24 hours"), ("-604800", "Last 7 days")]
DEFAULT_RANGE = "-86400"
STATUS_CLASSES = [("", "Any status"), ("2xx", "2xx success"), ("4xx", "4xx client error"),
                  ("5xx", "5xx server error"), ("error", "Any error (≥ 400)")]  # fmt: skip
SORTS = [("ts", "Time"), ("latency_ms", "Latency"), ("cost_usd", "Cost"), ("total_tokens", "Tokens")]
TEXT_FILTERS = [
    ("model", "Model"), ("served_model", "Served model"), ("provider", "Provider"), ("error_type", "Error type"),
    ("key", "Key (id or name)"), ("user", "User"), ("team", "Team"), ("tag", "Tag (key:value)"),
    ("metadata", "Metadata (key:value)"), ("text", "Text in prompt or answer"),
]  # fmt: skip
RANGE_FILTERS = [
    ("min_latency_ms", "Latency from (ms)"), ("max_latency_ms", "Latency to (ms)"),
    ("min_cost_usd", "Cost from ($)"), ("max_cost_usd", "Cost to ($)"),
]  # fmt: skip
_EXPORT_FORMATS = ("json", "ndjson", "csv")
_SIMILAR_K = 5


def _filters(request: Request) -> list[tuple[str, str]]:
    """The URL's filters as the API takes them, blank ones dropped, the default time range added."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if v.strip() != ""]
    if not any(k == "since" for k, _ in pairs):
        pairs.insert(0, ("since", DEFAULT_RANGE))
    return pairs


async def traces_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /api/v1/traces", me)
    pairs = _filters(request)
    problem, status = "", 200
    page: dict[str, Any] = {"data": [], "next_cursor": None}
    try:
        page = await list_traces(console.gateway, me, pairs)
    except InvalidRequest as exc:
        problem, status = str(exc.message), 400
    without_cursor = [(k, v) for k, v in pairs if k != "cursor"]
    context = {
        "me": me,
        "title": "Traces",
        "rows": page["data"],
        "next_cursor": page["next_cursor"],
        "paged": any(k == "cursor" for k, _ in pairs),
        "filters": dict(pairs),
        "pairs": without_cursor,
        "problem": problem,
        "ranges": RANGES,
        "status_classes": STATUS_CLASSES,
        "sorts": SORTS,
        "text_filters": TEXT_FILTERS,
        "range_filters": RANGE_FILTERS,
        "formats": _EXPORT_FORMATS,
        "is_admin": me.role == "admin",
    }
    return console.render("traces.html", request, context, status=status, session=session)


async def trace_page(console: Console, request: Request) -> Response:
    session, me = await console.session(request.scope)
    roles.require("GET /api/v1/traces/{id}", me)
    record = await one_trace(console.gateway, me, request.path_params["id"])
    context = {
        "similar": await _similar(console, me, record),
        "me": me,
        "title": f"Trace {record['id']}",
        "r": record,
        "spans": waterfall(record),
        "raw": orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
        "formats": _EXPORT_FORMATS,
    }
    return console.render("trace.html", request, context, session=session)


async def _similar(console: Console, me: Principal, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the same project whose prompts the similarity worker finds nearest this one's (as logged):
    the list's similar_to filter. None without similarity or logged content."""
    text = record.get("content_input") or ""
    if console.gateway.similarity is None or not text:
        return []
    pairs = [("similar_to", text), ("project", record["project"]), ("k", str(_SIMILAR_K + 1)), ("min_score", "0.3")]
    rows = (await list_traces(console.gateway, me, pairs))["data"]
    return [r for r in rows if r["id"] != record["id"]][:_SIMILAR_K]


def waterfall(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans in start order with their bar's place on a 0..1000 scale (the request's whole time)."""
    spans = [s for s in record.get("spans") or [] if isinstance(s, dict)]
    ends = [float(s.get("start_ms") or 0) + float(s.get("ms") or 0) for s in spans]
    total = max([float(record.get("latency_ms") or 0), *ends, 0.001])
    bars = []
    for s in sorted(spans, key=lambda s: float(s.get("start_ms") or 0)):
        start, ms = float(s.get("start_ms") or 0), float(s.get("ms") or 0)
        name = str(s.get("name", "?"))
        bars.append(
            {
                "name": name,
                "start_ms": start,
                "ms": ms,
                "x": round(start / total * 1000, 1),
                "w": max(round(ms / total * 1000, 1), 2.0),
                "kind": name.split(".")[0].split(":")[0],
                "depth": name.count("."),
            }
        )
    return bars


class ConsoleTraceExport(TraceExportEndpoint):
    """The API's export (same filters, formats and streaming) for a signed-in console user."""

    def __init__(self, console: Console) -> None:
        super().__init__(console.gateway)
        self.console = console

    async def principal(self, scope: Scope, route: str) -> Principal:
        try:
            _, me = await self.console.session(scope)
        except SignInRequired:
            raise AuthenticationFailed("Sign in to the console first.", code="no_session") from None
        roles.require(route, me)
        return me


class ConsoleTail(TailEndpoint):
    """The API's live tail (same filters, same project scoping) for the console's live mode: the session instead
    of a key, and only from the console's own pages (a WebSocket is not bound by the same-origin policy)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console.gateway)
        self.console = console

    async def authorize(self, scope: Scope) -> Principal:
        headers = dict(scope["headers"])
        origin, host = headers.get(b"origin", b"").decode("latin-1"), headers.get(b"host", b"").decode("latin-1")
        if origin.partition("://")[2] != host:
            raise PermissionDenied("The live tail answers the console's own pages only.", code="csrf_failed")
        try:
            _, me = await self.console.session(scope)
        except SignInRequired:
            raise AuthenticationFailed("Sign in to the console first.", code="no_session") from None
        roles.require("GET /api/v1/traces/tail", me)
        return me
