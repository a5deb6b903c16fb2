"""The request records read back as traces: one record is one trace, its spans inline.

    GET /api/v1/traces?<filters>                  a page: {"object": "list", "data", "next_cursor", "has_more"}
    GET /api/v1/traces/{id}                       one record with its spans (404 if absent or of another project)
    GET /api/v1/traces/{id}/export?format=        the same as an attachment: json | ndjson | csv
    GET /api/v1/traces/export?format=&<filters>   every matching record, streamed; `limit` caps the rows
                                                  (default and at most MAX_EXPORT_ROWS)

Filters are gateway/store/trace_sql.py's (parse_trace_query names them), plus `similar_to=<text>` (with `k` and
`min_score`; list only): the records whose prompt the similarity worker finds nearest that text, each with its
`similarity` score. Admins read any project (or all, without `project`); everyone else the matrix lets in reads
their own project, whatever `project` says.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.access import AdminEndpoint, authorize, require_traces, visible_project
from gateway.api.http import query_pairs, scope_id_headers, send_error
from gateway.errors import GatewayError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.store.base import JSON_COLUMNS, RECORD_COLUMNS, Record, StoreUnavailable, TraceStore
from gateway.store.trace_sql import MAX_LIMIT, TraceQuery, parse_trace_query
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway

MAX_EXPORT_ROWS = 100_000
FORMATS = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_SIMILAR = ("similar_to", "k", "min_score")


def scoped(q: TraceQuery, principal: Principal) -> TraceQuery:
    """The query held to the projects the principal may read (access.visible_project)."""
    return dataclasses.replace(q, project=visible_project(principal, q.project))


class TracesEndpoint(AdminEndpoint):
    """GET /api/v1/traces and GET /api/v1/traces/{id}."""

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        record_id = scope.get("path_params", {}).get("id")
        if record_id is not None:
            principal = await authorize(self.gateway, scope, "GET /api/v1/traces/{id}")
            return 200, await one_trace(self.gateway, principal, record_id)
        principal = await authorize(self.gateway, scope, "GET /api/v1/traces")
        return 200, await list_traces(self.gateway, principal, query_pairs(scope))


async def list_traces(gateway: Gateway, principal: Principal, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A page of the records the filters in `pairs` select, held to the principal's project (the console's list
    too); the caller has checked the role."""
    store = require_traces(gateway)
    q = scoped(parse_trace_query(pairs, allow=_SIMILAR), principal)
    q, scores = await _similar(gateway, q, pairs)
    rows, cursor = await store.query_traces(q)
    if scores:
        for row in rows:
            row["similarity"] = scores.get(row["id"])
    return {"object": "list", "data": rows, "next_cursor": cursor, "has_more": cursor is not None}


async def _similar(
    gateway: Gateway, q: TraceQuery, pairs: list[tuple[str, str]]
) -> tuple[TraceQuery, dict[str, float]]:
    """similar_to: the query restricted to the nearest records' ids, and their scores."""
    params = dict(pairs)
    text = params.get("similar_to", "")
    if not text:
        return q, {}
    similarity = gateway.similarity
    if similarity is None:
        raise InvalidRequest("similarity is off: similar_to needs similarity.enabled.", param="similar_to")
    if q.project is None:
        raise InvalidRequest("similar_to compares within one project: pass project.", param="project")
    k = _bounded(params, "k", 100, int, 1, MAX_LIMIT)
    min_score = _bounded(params, "min_score", 0.0, float, -1.0, 1.0)
    found = await similarity.nearest(q.project, text, int(k), float(min_score))
    scores = {str(i): float(s) for i, s in found}
    return dataclasses.replace(q, ids=tuple(scores)), scores


async def one_trace(gateway: Gateway, principal: Principal, record_id: str) -> Record:
    project = visible_project(principal, None)
    record = await require_traces(gateway).get_trace(record_id, project=project)
    if record is None:  # another project's record is as absent as a missing one: nothing leaks
        raise NotFound(f"No trace {record_id!r}.", param="id")
    return record


def _bounded(params: dict[str, str], name: str, default: float, kind: type, low: float, high: float) -> float:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = float(kind(raw))
    except ValueError:
        raise InvalidRequest(f"{name} must be a number, not {raw!r}.", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}.", param=name)
    return value


class TraceExportEndpoint(AdminEndpoint):
    """GET /api/v1/traces/{id}/export and GET /api/v1/traces/export: an attachment, streamed page by page (the
    whole body is never held), so it answers through ASGI directly rather than through `handle`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ids = scope_id_headers(scope)
        try:
            fmt, name, rows = await self._prepare(scope)
            first = await anext(rows, None)  # a store failure still gets its error status, before the headers
        except StoreUnavailable:
            await send_error(send, ServiceUnavailable("The store cannot be reached; try again shortly."), ids)
            return
        except GatewayError as exc:
            await send_error(send, exc, ids)
            return
        headers = [
            (b"content-type", FORMATS[fmt].encode()),
            (b"content-disposition", f'attachment; filename="{name}.{fmt}"'.encode()),
            *ids,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        single = "id" in scope.get("path_params", {})
        chunks = _encode(fmt, first, rows, single)
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except StoreUnavailable:
            pass  # the status is sent: a cut body (no closing bracket, a short CSV) is what the client sees
        await send({"type": "http.response.body", "body": b""})

    async def principal(self, scope: Scope, route: str) -> Principal:
        """The caller, allowed on `route`: by its key here, by its session in the console's export."""
        return await authorize(self.gateway, scope, route)

    async def _prepare(self, scope: Scope) -> tuple[str, str, AsyncIterator[Record]]:
        record_id = scope.get("path_params", {}).get("id")
        route = "GET /api/v1/traces/{id}/export" if record_id is not None else "GET /api/v1/traces/export"
        principal = await self.principal(scope, route)
        pairs = query_pairs(scope)
        fmt = dict(pairs).get("format") or "json"
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}.", param="format")
        if record_id is not None:
            record = await one_trace(self.gateway, principal, record_id)
            return fmt, f"trace-{_safe(record_id)}", _single(record)
        params = dict(pairs)
        cap = int(_bounded(params, "limit", MAX_EXPORT_ROWS, int, 1, MAX_EXPORT_ROWS))
        filters = [(k, v) for k, v in pairs if k not in ("format", "limit")]
        q = scoped(parse_trace_query(filters), principal)
        return fmt, "traces", _all_pages(require_traces(self.gateway), dataclasses.replace(q, limit=MAX_LIMIT), cap)


async def _single(record: Record) -> AsyncIterator[Record]:
    yield record


async def _all_pages(store: TraceStore, q: TraceQuery, cap: int) -> AsyncIterator[Record]:
    sent = 0
    while True:
        rows, cursor = await store.query_traces(q)
        for row in rows[: cap - sent]:
            yield row
        sent += len(rows)
        if cursor is None or sent >= cap:
            return
        q = dataclasses.replace(q, cursor=cursor)


async def _encode(fmt: str, first: Record | None, rows: AsyncIterator[Record], single: bool) -> AsyncIterator[bytes]:
    """The body in pieces: about a page of rows each."""
    batch: list[Record] = [] if first is None else [first]
    if fmt == "csv":
        yield _csv([], header=True)
    elif fmt == "json" and not single:
        yield b"["
    started = False
    async for row in _batches(batch, rows):
        if fmt == "csv":
            yield _csv(row)
        elif fmt == "ndjson":
            yield b"".join(orjson.dumps(r) + b"\n" for r in row)
        elif single:
            yield orjson.dumps(row[0])
        else:
            body = b",".join(orjson.dumps(r) for r in row)
            yield (b"," + body) if started else body
            started = True
    if fmt == "json" and not single:
        yield b"]"


async def _batches(batch: list[Record], rows: AsyncIterator[Record], size: int = 500) -> AsyncIterator[list[Record]]:
    async for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv(rows: Iterable[Record], *, header: bool = False) -> bytes:
    """Flat columns, RECORD_COLUMNS in order; JSON columns as JSON text, None as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(RECORD_COLUMNS)
    for row in rows:
        writer.writerow(
            orjson.dumps(row[c]).decode() if c in JSON_COLUMNS else "" if row[c] is None else row[c]
            for c in RECORD_COLUMNS
        )
    return out.getvalue().encode()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:128]
