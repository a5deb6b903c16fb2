"""W3C Trace Context: the trace a request belongs to, taken from the client's `traceparent` when it sends a valid
one, else the request's own (its record id, a UUIDv7, is a valid trace id); and the `traceparent` the gateway
sends upstream, so that the provider's spans (where a provider records them) join the client's trace.

    traceparent: 00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>

A client's trace id names where the request belongs, never what it is: records, spans and sink events have ids
of the gateway's own (gateway/ids.py), so two requests bringing the same traceparent (two tenants, say) never share
one. Where a sink merges events by trace id (Langfuse), the trace is the project's: see `project_trace_id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from gateway.ids import new_span_id

_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def incoming(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, str]:
    """(trace id, the client's span id) from a valid `traceparent`; ("", "") when it sent none or a broken one."""
    for name, value in headers:
        if name == b"traceparent":
            match = _TRACEPARENT.fullmatch(value.strip().lower())
            if match and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN:
                return match[1].decode(), match[2].decode()
            break
    return "", ""


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def upstream_headers(headers: Mapping[str, str], trace_id: str) -> dict[str, str]:
    """A provider's headers with the `traceparent` of a new span: the gateway's upstream call."""
    return {**headers, "traceparent": traceparent(trace_id, new_span_id())}


def traceparent_line(trace_id: str) -> bytes:
    """The `traceparent` header of a new span, the gateway's upstream call, as a line of the request's head: what a
    call adds to the provider's headers, which the upstream client has as bytes already."""
    return f"traceparent: 00-{trace_id}-{new_span_id()}-01\r\n".encode("ascii")


def project_trace_id(project: str, trace_id: str) -> str:
    """The trace id a sink that merges by trace id (Langfuse) gets: the W3C trace id within the record's project.

    Langfuse upserts a trace by id (a later trace-create overwrites its name, input, output and metadata), so a W3C
    trace id taken as is would let any client that sends another tenant's trace id in a traceparent write into
    that tenant's trace. Within a project, requests of one client trace still share one Langfuse trace; across
    projects they never do. 32 hex digits (BLAKE2b-128 of the project and the trace id; a trace id has no newline,
    so the pair is read back unambiguously from the text hashed)."""
    h = _PROJECT_TRACE_HASH.copy()  # a copy costs a fifth less than blake2b(data, digest_size=16)
    h.update(f"{project}\n{trace_id}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


_PROJECT_TRACE_HASH = hashlib.blake2b(digest_size=16)
