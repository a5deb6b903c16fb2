"""Request records as OTLP/HTTP JSON: spans and metrics named by the OpenTelemetry GenAI semantic conventions.

Pure functions, no I/O; `sinks.OtlpSink` posts what they build. The JSON follows OTLP's protobuf mapping with
its two exceptions: trace and span ids are hex strings (not base64), and enums are integers. 64-bit integers
(timestamps, intValue, counts) are strings, as proto3 JSON encodes them.

Per record, one SERVER span — the gateway serving the request, named "{operation} {model}" ("chat gpt-4o") —
with the `gen_ai.*` attributes, and one INTERNAL child per entry of the record's `spans` (filters, routing
attempts, upstream phases). Span ids are derived from the record id (the gateway's, random), so the same record
always gives the same spans and two records never share one, whatever ids or traceparent their clients sent. The
trace id is the record's `trace_id`: the client's W3C trace (spans only add to a trace, so joining it is what
propagation is for), else the record's own.

Spans are encoded straight to bytes (templates, and the attributes that repeat from request to request cached),
not built as dicts for orjson: this runs for every request the gateway serves, and the dicts were most of its
cost. Metrics are few per batch and built as dicts.
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
    may dedupe. Its children's are the next numbers (see spans)."""
    h = _SPAN_HASH.copy()
    h.update(record_id.encode())
    return int.from_bytes(h.digest(), "big") or 1


# Copied for each record: a copy costs a fifth less than blake2b(data, digest_size=8) and its keyword parsing.
_SPAN_HASH = hashlib.blake2b(digest_size=8)


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


# The root span's attributes that repeat from request to request (who asked for what, where it went, how it
# ended), encoded once per distinct combination; the few that change with every request are filled in a template.
# Building ~20 small dicts per record was most of this module's cost (CPU per request on the telemetry bench).
# typed=True: to a plain lru_cache True, 1 and 1.0 are the same argument, yet they encode differently.
@lru_cache(maxsize=4096, typed=True)
def _static_attributes(
    provider: object,
    requested: object,
    served: object,
    endpoint: object,
    project: object,
    team: object,
    key_name: object,
    deployment: object,
    route_reason: object,
    usage_source: object,
    status: int,
    error_type: object,
    error_domain: object,
    attempts: object,
    stream: object,
) -> bytes:
    """The repeating attributes as JSON list items (no brackets)."""
    provider = provider or None
    items = {
        "gen_ai.operation.name": operation({"endpoint": endpoint}),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name, still read by many backends
        "gen_ai.request.model": requested,
        "gen_ai.response.model": served,
        "http.response.status_code": status or None,
        "error.type": (error_type or str(status)) if status >= 400 else None,
        "gateway.endpoint": endpoint,
        "gateway.project": project,
        "gateway.team": team,
        "gateway.key_name": key_name,
        "gateway.deployment": deployment,
        "gateway.stream": stream,
        "gateway.attempts": attempts,
        "gateway.route_reason": route_reason,
        "gateway.usage_source": usage_source,
        "gateway.error_domain": error_domain,
    }
    return orjson.dumps(attributes(items))[1:-1]


def _repeating_attributes(record: Record) -> bytes:
    get = record.get
    fields = (
        get("provider"),
        get("model_requested"),
        get("model_served"),
        get("endpoint", ""),
        get("project"),
        get("team"),
        get("key_name"),
        get("deployment"),
        get("route_reason"),
        get("usage_source"),
        int(get("status") or 0),
        get("error_type"),
        get("error_domain"),
        get("attempts"),
        get("stream"),
    )
    try:
        return _static_attributes(*fields)
    except TypeError:  # a value that cannot be a cache key (a list, say): encoded all the same
        return _static_attributes.__wrapped__(*fields)


_REQUEST_ID = b'{"key":"gateway.request_id","value":{"stringValue":%s}}'
_TOKENS = (
    b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":"%d"}},'
    b'{"key":"gen_ai.usage.output_tokens","value":{"intValue":"%d"}}'
)
_COST = b'{"key":"gateway.cost_usd","value":{"doubleValue":%s}}'


def _root_attributes(record: Record) -> bytes:
    """The root span's attributes as a JSON list."""
    parts = [_repeating_attributes(record), _REQUEST_ID % orjson.dumps(str(record.get("id")))]
    if record.get("usage_source") != "none":
        parts.append(_TOKENS % (int(record.get("prompt_tokens") or 0), int(record.get("completion_tokens") or 0)))
    cost = record.get("cost_usd")
    if type(cost) is float:
        parts.append(_COST % orjson.dumps(cost))
        cost = None
    ttft_ms = record.get("ttft_ms")
    client_request_id = record.get("client_request_id")
    if cost is not None or ttft_ms is not None or client_request_id:
        items: dict[str, object] = {
            "gateway.cost_usd": cost,
            "gateway.ttft_ms": ttft_ms,
            "gateway.client_request_id": client_request_id,
        }
        parts.append(orjson.dumps(attributes(items))[1:-1])
    tags = record.get("tags")
    metadata = record.get("metadata")
    if metadata:
        parts.append(_labels(tags or {}, metadata))
    elif tags:
        # A request's tags (its policies' labels) repeat from request to request: encoded once per distinct set
        # of text values (a cache key must not take 1, 1.0 and True for one value: they encode differently).
        pairs = tuple(tags.items())
        for _, tag in pairs:  # a loop, not all() over a generator: a generator's frame costs more than the test
            if type(tag) is not str:
                parts.append(_labels(tags, {}))
                break
        else:
            parts.append(_text_tags(pairs))
    return b"[" + b",".join(filter(None, parts)) + b"]"  # an empty part (no attribute) leaves no comma


def _labels(tags: Mapping[str, object], metadata: Mapping[str, object]) -> bytes:
    """The request's tags and metadata as attributes (JSON list items, no brackets)."""
    items = {f"gateway.tag.{key}": tag for key, tag in tags.items()}
    for key, meta in metadata.items():
        items[f"gateway.metadata.{key}"] = meta
    return orjson.dumps(attributes(items))[1:-1]


@lru_cache(maxsize=1024)
def _text_tags(pairs: tuple[tuple[str, str], ...]) -> bytes:
    return _labels(dict(pairs), {})


@lru_cache(maxsize=4096)
def _json_string(s: str) -> bytes:
    """A span name as JSON: names repeat (filters, deployments, phases)."""
    return orjson.dumps(s)


# The root span and a child span, filled by %: ids and integers, and strings already encoded as JSON.
_ROOT = (
    b'{"traceId":%s,"spanId":"%016x",%s"name":%s,"kind":%d,'
    b'"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":%s,"status":%s}'
)
# A child's template is filled in two steps: the record's trace and parent ids once, then each child's own fields
# (hence the %% of the second step): its id and times, and the rest, which depends on its name alone (cached).
_CHILD = b'{"traceId":%s,"parentSpanId":"%016x","spanId":"%%016x","startTimeUnixNano":"%%d","endTimeUnixNano":"%%d",%%s'
# The same, the child's id written as the root's first 14 hex digits and a last byte from _HEX_BYTE.
_CHILD_LOW = _CHILD.replace(b'"%%016x"', b'"%014x%%s"', 1)
_HEX_BYTE = tuple(b"%02x" % i for i in range(0x100))
_CHILD_FAILED = orjson.dumps({"code": STATUS_ERROR, "message": "attempt failed"})


@lru_cache(maxsize=4096)
def _child_rest(name: str) -> bytes:
    """A child span's fields after its times, which depend on its name only (names repeat: filters, deployments,
    phases)."""
    status = _CHILD_FAILED if name.endswith(":failed") else b"{}"
    return b'"name":%s,"kind":%d,"attributes":[],"status":%s}' % (orjson.dumps(name), SPAN_KIND_INTERNAL, status)


def spans(record: Record) -> bytes:
    """The record's SERVER span, then one INTERNAL child per recorded phase: JSON objects joined by commas, to
    go between the brackets of a `spans` list (traces_body). Ids are derived from the record id."""
    trace_json = orjson.dumps(str(record["trace_id"]))  # not cached: one per request
    root_number = _span_number(str(record["id"]))
    start = _nanos(float(record["ts"]))
    status = int(record.get("status") or 0)
    parent = record.get("parent_span_id")
    out = [
        _ROOT
        % (
            trace_json,
            root_number,
            b'"parentSpanId":%s,' % _json_string(str(parent)) if parent else b"",
            _json_string(f"{operation(record)} {model_of(record)}".strip()),
            SPAN_KIND_SERVER,
            start,
            start + _ms_nanos(record.get("latency_ms")),
            _root_attributes(record),
            orjson.dumps({"code": STATUS_ERROR, "message": str(record.get("error_type") or status)})
            if status >= 400
            else b"{}",
        )
    ]
    # Per child, in line (no call but the cached one): it runs for every phase of every request. A child's id is
    # the root's plus its rank; all zeros is the invalid span id: wrapping past it skips it.
    phases = record.get("spans") or ()
    low = root_number & 0xFF
    if low + len(phases) < 0x100:
        # As nearly always: the children's ids differ from the root's in their last byte only (no carry, no wrap),
        # written from a table of its 256 values rather than by formatting 16 hex digits a child.
        child = _CHILD_LOW % (trace_json, root_number, root_number >> 8)
        for i, phase in enumerate(phases, low + 1):
            phase_start = start + round((phase["start_ms"] or 0.0) * 1e6)
            phase_end = phase_start + round((phase["ms"] or 0.0) * 1e6)
            out.append(child % (_HEX_BYTE[i], phase_start, phase_end, _child_rest(str(phase["name"]))))
        return b",".join(out)
    child = _CHILD % (trace_json, root_number)
    for i, phase in enumerate(phases, 1):
        phase_start = start + round((phase["start_ms"] or 0.0) * 1e6)
        phase_end = phase_start + round((phase["ms"] or 0.0) * 1e6)
        out.append(child % ((root_number + i) & _MASK64 or 1, phase_start, phase_end, _child_rest(str(phase["name"]))))
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
    tail = b"]}]}]}"
    if not encoded_spans:
        return head + tail
    # One copy of what may be a megabyte: the head and tail go onto the first and last records' spans.
    chunks = list(encoded_spans)
    chunks[0] = head + chunks[0]
    chunks[-1] += tail
    return b",".join(chunks)


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


class MetricSeries:
    """The delta histograms of a batch's requests, observed a part at a time (OtlpSink pauses the event loop
    between parts), then made into the body of POST /v1/metrics (`request`).

    Series are keyed by operation, provider, requested and served model (and token type, or error type); a
    client's view in name, since the gateway is the upstream's client and these are the upstream calls it made."""

    def __init__(self) -> None:
        self.tokens: _Series = {}
        self.durations: _Series = {}

    def observe(self, records: Sequence[Record]) -> None:
        tokens, durations = self.tokens, self.durations
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

    def request(self, start_s: float, end_s: float) -> Json:
        """The body of POST /v1/metrics: gen_ai.client.token.usage and gen_ai.client.operation.duration over
        [start_s, end_s] (the batch's first request start to the export time)."""
        start, end = _nanos(start_s), _nanos(end_s)
        token_labels = (*_BASE_LABELS, "gen_ai.token.type")
        duration_labels = (*_BASE_LABELS, "error.type")
        metrics = [
            _histogram(
                "gen_ai.client.token.usage", "{token}", "Tokens of the upstream calls", token_labels, self.tokens,
                start, end,
            ),
            _histogram(
                "gen_ai.client.operation.duration", "s", "Duration of the requests", duration_labels,
                self.durations, start, end,
            ),
        ]  # fmt: skip
        # A metric with no data point (a batch with no known usage) is left out rather than sent empty.
        metrics = [m for m in metrics if m["histogram"]["dataPoints"]]
        return {
            "resourceMetrics": [
                {"resource": _resource(), "scopeMetrics": [{"scope": {"name": SCOPE_NAME}, "metrics": metrics}]}
            ]
        }


def metrics_request(records: Sequence[Record], start_s: float, end_s: float) -> Json:
    """The body of POST /v1/metrics for a batch's records, observed at once (MetricSeries)."""
    series = MetricSeries()
    series.observe(records)
    return series.request(start_s, end_s)
