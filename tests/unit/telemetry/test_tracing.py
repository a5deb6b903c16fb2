"""W3C traceparent: accepted when valid, a new trace otherwise, and a fresh span id for each upstream call."""

from __future__ import annotations

import re

import pytest

from gateway.telemetry.tracing import incoming, new_trace_id, traceparent, upstream_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_a_valid_traceparent_is_kept() -> None:
    assert incoming([(b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())]) == (TRACE, PARENT)


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
def test_an_invalid_traceparent_starts_a_new_trace(value: bytes) -> None:
    trace, parent = incoming([(b"traceparent", value)])
    assert re.fullmatch(r"[0-9a-f]{32}", trace)
    assert trace != TRACE
    assert parent == ""


def test_ids_are_unique_and_upstream_gets_a_new_span() -> None:
    assert len({new_trace_id() for _ in range(1000)}) == 1000
    first = upstream_headers({"authorization": "Bearer x"}, TRACE)
    second = upstream_headers({"authorization": "Bearer x"}, TRACE)
    assert first["authorization"] == "Bearer x"
    assert first["traceparent"].startswith(f"00-{TRACE}-")
    assert first["traceparent"].endswith("-01")
    assert first["traceparent"] != second["traceparent"]
    assert traceparent(TRACE, PARENT) == f"00-{TRACE}-{PARENT}-01"
