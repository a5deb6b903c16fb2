"""Request records as OTLP/HTTP JSON: spans and metrics named by the OpenTelemetry GenAI semantic conventions.

Pure functions, no I/O; `sinks.OtlpSink` posts what they build. The JSON follows OTLP's protobuf mapping with
its two exceptions: trace and span ids are hex strings (not base64), and enums are integers. 64-bit integers
(timestamps, intValue, counts) are strings, as proto3 JSON encodes them.

Per record, one SERVER span — the gateway serving the request, named "{operation} {model}" ("chat gpt-4o") —
with the `gen_ai.*` attributes, and one INTERNAL child per entry of the record's `spans` (filters, routing
attempts, upstream phases). Ids are derived from the record id, so the same record always gives the same spans.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson

Record = dict[str, Any]
Json = dict[str, Any]

SERVICE_NAME = "llm-gateway"
SCOPE_NAME = "gateway"

# OTLP enums (opentelemetry/proto/trace/v1/trace.proto, metrics/v1/metrics.proto).
SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
STATUS_ERROR = 2
TEMPORALITY_DELTA = 1

# The gateway's endpoints and the GenAI operation each one is.
OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}

# The bucket boundaries the GenAI metric conventions recommend for these two histograms.
TOKEN_BOUNDS = [4.0**i for i in range(14)]  # 1, 4, 16 ... 67,108,864
DURATION_BOUNDS = [0.01 * 2.0**i for i in range(14)]  # 0.01 s ... 81.92 s


def operation(record: Record) -> str:
    endpoint = str(record.get("endpoint", ""))
    return OPERATIONS.get(endpoint, endpoint.replace("/", ".") or "unknown")


def model_of(record: Record) -> str:
    return str(record.get("model_served") or record.get("model_requested") or "")


_MASK64 = (1 << 64) - 1


def _span_number(record_id: str) -> int:
    """The record's span id as a number, stable for a record: a resent batch gives the same ids, which a backend
    may dedupe. Its children's are the next numbers (see _child_id)."""
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big") or 1


def _child_id(root: int, i: int) -> int:
    # All zeros is the invalid span id: wrapping past it skips it.
    return (root + i) & _MASK64 or 1


def value(v: object) -> Json:
    """An OTLP AnyValue. bool before int: a bool is an int in Python."""
    if type(v) is str:  # the most common, checked first
        return {"stringValue": v}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, Mapping | list | tuple):
        # Lists of guardrail findings and the like: a string is the most portable form.
        return {"stringValue": repr(v)}
    return {"stringValue": str(v)}


def attributes(items: Mapping[str, object]) -> list[Json]:
    """Key-values, leaving out what is unknown (None) or empty: an absent attribute reads better than a blank."""
    return [{"key": k, "value": value(v)} for k, v in items.items() if v is not None and v != ""]


def _nanos(seconds: float) -> int:
    # Epoch seconds as a double carry about a microsecond of precision; rounding to it avoids 0.249999872 s.
    return round(seconds * 1e6) * 1000


def _ms_nanos(ms: float | None) -> int:
    return round((ms or 0.0) * 1e6)


# The root span's attributes that repeat from request to request (who asked for what, where it went), encoded once
# per distinct combination: building ~20 small dicts per record was most of this module's cost.
_STATIC_FIELDS = (
    "provider",
    "model_requested",
    "model_served",
    "endpoint",
    "project",
    "team",
    "key_name",
    "deployment",
    "route_reason",
    "usage_source",
)


@lru_cache(maxsize=4096)
def _static_attributes(values: tuple[object, ...]) -> bytes:
    """The repeating attributes as JSON list items (no brackets)."""
    r = dict(zip(_STATIC_FIELDS, values, strict=True))
    provider = r["provider"] or None
    items = {
        "gen_ai.operation.name": operation(r),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name, still read by many backends
        "gen_ai.request.model": r["model_requested"],
        "gen_ai.response.model": r["model_served"],
        "gateway.endpoint": r["endpoint"],
        "gateway.project": r["project"],
        "gateway.team": r["team"],
        "gateway.key_name": r["key_name"],
        "gateway.deployment": r["deployment"],
        "gateway.route_reason": r["route_reason"],
        "gateway.usage_source": r["usage_source"],
    }
    return orjson.dumps(attributes(items))[1:-1]


def _root_attributes(record: Record) -> bytes:
    """The root span's attributes as a JSON list."""
    status = int(record.get("status") or 0)
    items: dict[str, object] = {
        "http.response.status_code": status or None,
        "error.type": (record.get("error_type") or str(status)) if status >= 400 else None,
        "gateway.request_id": record.get("id"),
        "gateway.stream": record.get("stream"),
        "gateway.cost_usd": record.get("cost_usd"),
        "gateway.attempts": record.get("attempts"),
        "gateway.error_domain": record.get("error_domain"),
        "gateway.ttft_ms": record.get("ttft_ms"),
    }
    if record.get("usage_source") != "none":
        items["gen_ai.usage.input_tokens"] = int(record.get("prompt_tokens") or 0)
        items["gen_ai.usage.output_tokens"] = int(record.get("completion_tokens") or 0)
    for key, tag in (record.get("tags") or {}).items():
        items[f"gateway.tag.{key}"] = tag
    for key, meta in (record.get("metadata") or {}).items():
        items[f"gateway.metadata.{key}"] = meta
    static = _static_attributes(tuple(record.get(field) for field in _STATIC_FIELDS))
    dynamic = orjson.dumps(attributes(items))[1:-1]
    return b"[" + static + (b"," + dynamic if static and dynamic else dynamic) + b"]"


@lru_cache(maxsize=4096)
def _json_string(s: str) -> bytes:
    return orjson.dumps(s)


# A child span, filled by %: its fields are ids and integers, and a name already encoded as a JSON string.
_CHILD = (
    b'{"traceId":%s,"spanId":"%016x","parentSpanId":"%016x","name":%s,"kind":%d,'
    b'"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[],"status":%s}'
)
_CHILD_FAILED = orjson.dumps({"code": STATUS_ERROR, "message": "attempt failed"})


def spans(record: Record) -> bytes:
    """The record's SERVER span, then one INTERNAL child per recorded phase: JSON objects joined by commas, to
    go between the brackets of a `spans` list (traces_body). Ids are derived from the record id."""
    trace_id = str(record["trace_id"])
    root_number = _span_number(str(record["id"]))
    start = _nanos(float(record["ts"]))
    end = start + _ms_nanos(record.get("latency_ms"))
    status = int(record.get("status") or 0)
    model = model_of(record)
    root: Json = {
        "traceId": trace_id,
        "spanId": f"{root_number:016x}",
        "name": f"{operation(record)} {model}".strip(),
        "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": orjson.Fragment(_root_attributes(record)),
        "status": {"code": STATUS_ERROR, "message": str(record.get("error_type") or status)} if status >= 400 else {},
    }
    if record.get("parent_span_id"):
        root["parentSpanId"] = record["parent_span_id"]
    out = [orjson.dumps(root)]
    trace_json = _json_string(trace_id)
    for i, phase in enumerate(record.get("spans") or (), 1):
        name = str(phase["name"])
        phase_start = start + round(phase["start_ms"] * 1e6)
        out.append(
            _CHILD
            % (
                trace_json,
                _child_id(root_number, i),
                root_number,
                _json_string(name),
                SPAN_KIND_INTERNAL,
                phase_start,
                phase_start + round(phase["ms"] * 1e6),
                _CHILD_FAILED if name.endswith(":failed") else b"{}",
            )
        )
    return b",".join(out)


def _resource() -> Json:
    return {"attributes": attributes({"service.name": SERVICE_NAME})}


_RESOURCE = orjson.dumps(_resource())


def traces_body(encoded_spans: Sequence[bytes]) -> bytes:
    """The body of POST /v1/traces (ExportTraceServiceRequest) for records' spans already encoded (`spans` of
    each record; OtlpSink encodes them a slice at a time)."""
    head = b'{"resourceSpans":[{"resource":%s,"scopeSpans":[{"scope":{"name":%s},"spans":[' % (
        _RESOURCE,
        _json_string(SCOPE_NAME),
    )
    return head + b",".join(encoded_spans) + b"]}]}]}"


class _Histogram:
    """One data point of a delta histogram with explicit bounds."""

    __slots__ = ("bounds", "counts", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        # A value equal to a bound falls in the bucket that bound closes (OTLP: upper bounds are inclusive).
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.count += 1
        self.sum += v

    def point(self, attrs: Mapping[str, object], start: int, end: int) -> Json:
        return {
            "attributes": attributes(attrs),
            "startTimeUnixNano": str(start),
            "timeUnixNano": str(end),
            "count": str(self.count),
            "sum": self.sum,
            "bucketCounts": [str(c) for c in self.counts],
            "explicitBounds": list(self.bounds),
        }


# A series' key: the values of its attributes, named by the metric's label names (None: left out).
_Series = dict[tuple[object, ...], _Histogram]
_BASE_LABELS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model")


def _histogram(
    name: str, unit: str, description: str, labels: Sequence[str], series: _Series, start: int, end: int
) -> Json:
    return {
        "name": name,
        "unit": unit,
        "description": description,
        "histogram": {
            "dataPoints": [h.point(dict(zip(labels, key, strict=True)), start, end) for key, h in series.items()],
            "aggregationTemporality": TEMPORALITY_DELTA,
        },
    }


def _observe(series: _Series, key: tuple[object, ...], bounds: Sequence[float], v: float) -> None:
    histogram = series.get(key)
    if histogram is None:
        histogram = series[key] = _Histogram(bounds)
    histogram.observe(v)


def metrics_request(records: Sequence[Record], start_s: float, end_s: float) -> Json:
    """The body of POST /v1/metrics: the batch's gen_ai.client.token.usage and gen_ai.client.operation.duration,
    delta histograms over [start_s, end_s] (the batch's first request start to the export time).

    Series are keyed by operation, provider, requested and served model (and token type, or error type); a
    client's view in name, since the gateway is the upstream's client and these are the upstream calls it made."""
    tokens: _Series = {}
    durations: _Series = {}
    for record in records:
        base = (
            operation(record),
            record.get("provider") or None,
            record.get("model_requested") or None,
            record.get("model_served") or None,
        )
        status = int(record.get("status") or 0)
        error = (record.get("error_type") or str(status)) if status >= 400 else None
        _observe(durations, (*base, error), DURATION_BOUNDS, float(record.get("latency_ms") or 0) / 1000)
        if record.get("usage_source") == "none":
            continue  # no usage known: a zero would be a false count
        _observe(tokens, (*base, "input"), TOKEN_BOUNDS, int(record.get("prompt_tokens") or 0))
        _observe(tokens, (*base, "output"), TOKEN_BOUNDS, int(record.get("completion_tokens") or 0))
    start, end = _nanos(start_s), _nanos(end_s)
    token_labels = (*_BASE_LABELS, "gen_ai.token.type")
    duration_labels = (*_BASE_LABELS, "error.type")
    metrics = [
        _histogram(
            "gen_ai.client.token.usage", "{token}", "Tokens of the upstream calls", token_labels, tokens, start, end
        ),
        _histogram(
            "gen_ai.client.operation.duration", "s", "Duration of the requests", duration_labels, durations, start, end
        ),
    ]
    # A metric with no data point (a batch with no known usage) is left out rather than sent empty.
    metrics = [m for m in metrics if m["histogram"]["dataPoints"]]
    return {
        "resourceMetrics": [
            {"resource": _resource(), "scopeMetrics": [{"scope": {"name": SCOPE_NAME}, "metrics": metrics}]}
        ]
    }
