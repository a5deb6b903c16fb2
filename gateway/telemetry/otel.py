"""Request records as OTLP/HTTP JSON: spans and metrics named by the OpenTelemetry GenAI semantic conventions.

Pure functions, no I/O; `sinks.OtlpSink` posts what they build. The JSON follows OTLP's protobuf mapping with
its two exceptions: trace and span ids are hex strings (not base64), and enums are integers. 64-bit integers
(timestamps, intValue, counts) are strings, as proto3 JSON encodes them.

Per record, one SERVER span — the gateway serving the request, named "{operation} {model}" ("chat gpt-4o") —
with the `gen_ai.*` attributes, and one INTERNAL child per entry of the record's `spans` (filters, routing
attempts, upstream phases). Ids are derived from the record id, so the same record always gives the same spans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

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


def span_ids(record_id: str, children: int) -> tuple[str, list[str]]:
    """The record's span id and its children's (16 hex each), stable for a record: a resent batch gives the same
    ids, which a backend may dedupe. One hash per record; the children count on from it."""
    root = int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big") or 1
    # All zeros is the invalid span id: wrapping past it skips it.
    ids = [f"{(root + i) & _MASK64 or 1:016x}" for i in range(children + 1)]
    return ids[0], ids[1:]


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


def _root_attributes(record: Record) -> dict[str, object]:
    status = int(record.get("status") or 0)
    provider = record.get("provider") or None
    items: dict[str, object] = {
        "gen_ai.operation.name": operation(record),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name, still read by many backends
        "gen_ai.request.model": record.get("model_requested"),
        "gen_ai.response.model": record.get("model_served"),
        "http.response.status_code": status or None,
        "error.type": (record.get("error_type") or str(status)) if status >= 400 else None,
        "gateway.request_id": record.get("id"),
        "gateway.endpoint": record.get("endpoint"),
        "gateway.project": record.get("project"),
        "gateway.team": record.get("team"),
        "gateway.key_name": record.get("key_name"),
        "gateway.deployment": record.get("deployment"),
        "gateway.stream": record.get("stream"),
        "gateway.cost_usd": record.get("cost_usd"),
        "gateway.attempts": record.get("attempts"),
        "gateway.route_reason": record.get("route_reason"),
        "gateway.usage_source": record.get("usage_source"),
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
    return items


def spans(record: Record) -> list[Json]:
    """The record's SERVER span, then one INTERNAL child per recorded phase."""
    record_id = str(record["id"])
    trace_id = str(record["trace_id"])
    phases = record.get("spans") or ()
    root_id, child_ids = span_ids(record_id, len(phases))
    start = _nanos(float(record["ts"]))
    end = start + _ms_nanos(record.get("latency_ms"))
    status = int(record.get("status") or 0)
    model = model_of(record)
    root: Json = {
        "traceId": trace_id,
        "spanId": root_id,
        "name": f"{operation(record)} {model}".strip(),
        "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attributes(_root_attributes(record)),
        "status": {"code": STATUS_ERROR, "message": str(record.get("error_type") or status)} if status >= 400 else {},
    }
    if record.get("parent_span_id"):
        root["parentSpanId"] = record["parent_span_id"]
    out = [root]
    for phase, child_id in zip(phases, child_ids, strict=True):
        name = str(phase["name"])
        phase_start = start + _ms_nanos(phase["start_ms"])
        failed = name.endswith(":failed")
        out.append(
            {
                "traceId": trace_id,
                "spanId": child_id,
                "parentSpanId": root_id,
                "name": name,
                "kind": SPAN_KIND_INTERNAL,
                "startTimeUnixNano": str(phase_start),
                "endTimeUnixNano": str(phase_start + _ms_nanos(phase["ms"])),
                "attributes": [],
                "status": {"code": STATUS_ERROR, "message": "attempt failed"} if failed else {},
            }
        )
    return out


def _resource() -> Json:
    return {"attributes": attributes({"service.name": SERVICE_NAME})}


def traces_body(all_spans: list[Json]) -> Json:
    """The body of POST /v1/traces (ExportTraceServiceRequest) for spans already built (`spans` of each record;
    OtlpSink builds them a slice at a time)."""
    return {
        "resourceSpans": [
            {"resource": _resource(), "scopeSpans": [{"scope": {"name": SCOPE_NAME}, "spans": all_spans}]}
        ]
    }


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
        bucket = next((i for i, bound in enumerate(self.bounds) if v <= bound), len(self.bounds))
        self.counts[bucket] += 1
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


_Series = dict[tuple[tuple[str, object], ...], _Histogram]


def _histogram(name: str, unit: str, description: str, series: _Series, start: int, end: int) -> Json:
    return {
        "name": name,
        "unit": unit,
        "description": description,
        "histogram": {
            "dataPoints": [h.point(dict(key), start, end) for key, h in series.items()],
            "aggregationTemporality": TEMPORALITY_DELTA,
        },
    }


def metrics_request(records: Sequence[Record], start_s: float, end_s: float) -> Json:
    """The body of POST /v1/metrics: the batch's gen_ai.client.token.usage and gen_ai.client.operation.duration,
    delta histograms over [start_s, end_s] (the batch's first request start to the export time).

    Series are keyed by operation, provider, requested and served model (and token type, or error type); a
    client's view in name, since the gateway is the upstream's client and these are the upstream calls it made."""
    tokens: _Series = {}
    durations: _Series = {}
    for record in records:
        base: dict[str, object] = {
            "gen_ai.operation.name": operation(record),
            "gen_ai.provider.name": record.get("provider") or None,
            "gen_ai.request.model": record.get("model_requested") or None,
            "gen_ai.response.model": record.get("model_served") or None,
        }
        status = int(record.get("status") or 0)
        error = {"error.type": record.get("error_type") or str(status)} if status >= 400 else {}
        key = tuple({**base, **error}.items())
        durations.setdefault(key, _Histogram(DURATION_BOUNDS)).observe(float(record.get("latency_ms") or 0) / 1000)
        if record.get("usage_source") == "none":
            continue  # no usage known: a zero would be a false count
        for token_type, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
            token_key = (*base.items(), ("gen_ai.token.type", token_type))
            tokens.setdefault(token_key, _Histogram(TOKEN_BOUNDS)).observe(int(record.get(field) or 0))
    start, end = _nanos(start_s), _nanos(end_s)
    metrics = [
        _histogram("gen_ai.client.token.usage", "{token}", "Tokens of the upstream calls", tokens, start, end),
        _histogram("gen_ai.client.operation.duration", "s", "Duration of the requests", durations, start, end),
    ]
    # A metric with no data point (a batch with no known usage) is left out rather than sent empty.
    metrics = [m for m in metrics if m["histogram"]["dataPoints"]]
    return {
        "resourceMetrics": [
            {"resource": _resource(), "scopeMetrics": [{"scope": {"name": SCOPE_NAME}, "metrics": metrics}]}
        ]
    }
