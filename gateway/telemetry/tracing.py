"""W3C Trace Context: the trace a request belongs to, taken from the client's `traceparent` when it sends a valid
one, else a new trace; and the `traceparent` the gateway sends upstream, so that the provider's spans (where a
provider records them) join the client's trace.

    traceparent: 00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping, Sequence

_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16

# As for request ids: a random prefix per process and a counter, unique across processes and far cheaper than a
# system call per id.
_TRACE_PREFIX = os.urandom(12).hex()
_SPAN_PREFIX = os.urandom(4).hex()
_traces = itertools.count(1)
_spans = itertools.count(1)


def new_trace_id() -> str:
    return f"{_TRACE_PREFIX}{next(_traces) & 0xFFFFFFFF:08x}"


def new_span_id() -> str:
    return f"{_SPAN_PREFIX}{next(_spans) & 0xFFFFFFFF:08x}"


def incoming(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, str]:
    """(trace id, the client's span id or "") from a valid `traceparent`, else a new trace with no parent."""
    for name, value in headers:
        if name == b"traceparent":
            match = _TRACEPARENT.fullmatch(value.strip().lower())
            if match and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN:
                return match[1].decode(), match[2].decode()
            break
    return new_trace_id(), ""


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def upstream_headers(headers: Mapping[str, str], trace_id: str) -> dict[str, str]:
    """A provider's headers with the `traceparent` of a new span: the gateway's upstream call."""
    return {**headers, "traceparent": traceparent(trace_id, new_span_id())}
