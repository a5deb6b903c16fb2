"""W3C traceparent: accepted when valid, else the request's own trace (its record id); a fresh random span id for
each upstream call; and Langfuse's trace ids held to a project."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings, strategies as st

from gateway.context import RequestContext
from gateway.ids import new_id
from gateway.tracecontext import incoming, project_trace_id, traceparent, upstream_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def context(headers: list[tuple[bytes, bytes]]) -> RequestContext:
    return RequestContext(request_id=new_id(), endpoint="chat/completions", headers=headers, raw_body=b"", body={})


def test_a_valid_traceparent_is_kept() -> None:
    assert incoming([(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]) == (TRACE, PARENT)
    ctx = context([(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())])
    assert (ctx.trace_id, ctx.parent_span_id) == (TRACE, PARENT)
    assert ctx.request_id != TRACE  # the record's id is the gateway's all the same


@pytest.mark.parametrize(
    "value",
    [
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",  # all-zero trace id is invalid
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short
        b"garbage",
    ],
)
def test_an_invalid_traceparent_gives_the_request_a_trace_of_its_own(value: bytes) -> None:
    assert incoming([(b"traceparent", value)]) == ("", "")
    ctx = context([(b"traceparent", value)])
    assert ctx.trace_id == ctx.request_id  # a UUIDv7 in 32 hex digits: a valid W3C trace id
    assert re.fullmatch(r"[0-9a-f]{32}", ctx.trace_id)
    assert ctx.parent_span_id == ""


def test_two_requests_without_a_traceparent_are_two_traces() -> None:
    assert context([]).trace_id != context([]).trace_id


def test_upstream_gets_a_new_span_of_the_trace_each_call() -> None:
    first = upstream_headers({"authorization": "Bearer x"}, TRACE)
    second = upstream_headers({"authorization": "Bearer x"}, TRACE)
    assert first["authorization"] == "Bearer x"
    assert re.fullmatch(rf"00-{TRACE}-[0-9a-f]{{16}}-01", first["traceparent"])
    assert first["traceparent"] != second["traceparent"]
    assert traceparent(TRACE, PARENT) == f"00-{TRACE}-{PARENT}-01"


@settings(database=None)
@given(st.text(max_size=40), st.text(max_size=40), st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
def test_a_langfuse_trace_is_the_projects_own(project: str, other: str, trace: str) -> None:
    """One W3C trace id in two projects is two Langfuse traces; within one project, one (and 32 hex digits)."""
    mine = project_trace_id(project, trace)
    assert re.fullmatch(r"[0-9a-f]{32}", mine)
    # Pinned: a batch spooled by one version and replayed by another must land in the same trace.
    assert mine == hashlib.blake2b(f"{project}\n{trace}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    assert mine == project_trace_id(project, trace)
    if other != project:
        assert project_trace_id(other, trace) != mine
    assert mine != trace
