"""Sinks that export request records to outside systems: Langfuse, an OpenTelemetry collector (OTLP/HTTP JSON),
and any Segment-compatible batch webhook (Segment, RudderStack, a receiver of one's own).

The outbox (gateway/sinks/outbox.py) calls `write` with a batch and owns retries, backoff and the spool. A
sink makes one request per batch (two for OTLP: traces, then metrics) and says how it failed:

    Exception
    ├── SinkUnavailable   network error, timeout, 5xx, 408, 429: the outbox retries the same batch later
    └── SinkRejected      any other 4xx: the sink refused the batch for good, which the outbox drops and counts

Credentials go in headers only; neither they nor a sink's URL appear in an exception message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Protocol

import aiohttp
import orjson

from gateway.config.telemetry import SinkConfig
from gateway.sinks import otel
from gateway.sinks.outbox import SinkRejected
from gateway.tasks import map_in_slices
from gateway.tracecontext import project_trace_id

logger = logging.getLogger("gateway.telemetry")

Record = dict[str, Any]
# Records encoded between two pauses of the event loop: encoding a whole batch (tens of microseconds a record) at
# once held the loop for tens of milliseconds, and every request waiting on it (p99 +40 ms at 400 req/s). A record
# is 110,000 instructions of Langfuse events or 150,000 of OTLP spans (bench/micro_record.py): 8 of them stay
# well within the millisecond that no background work may hold the loop for (issue 15).
_SLICE = 8
_METRICS_SLICE = 32  # records observed between pauses for OTLP's metrics: 23,000 instructions each


class SinkUnavailable(Exception):
    """The sink could not take the batch now (network error, timeout, 5xx, 408, 429): retry it later."""


class Sink(Protocol):
    name: str

    async def write(self, records: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 in UTC, to the millisecond (truncated): 2026-12-03T11:31:38.123Z.

    What datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") says, in a quarter of its time: a
    record gets three or four of these per sink, and a second's text is shared by the records of that second."""
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)  # as datetime rounds: to the microsecond, half to even
    seconds = int(whole)
    if micros < 0:
        seconds, micros = seconds - 1, micros + 1_000_000
    elif micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return _iso_second(seconds) + _MILLISECONDS[micros // 1000]


_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))  # an int's format spec cost a third of iso()


@lru_cache(maxsize=1024)
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def status_failure(name: str, status: int, *, retry_redirects: bool = False) -> Exception | None:
    """What an answer's status means for the batch: None (taken); SinkUnavailable (5xx, 408, 429, and a redirect
    when `retry_redirects`: try again later); SinkRejected (any other: refused for good)."""
    if status < 300:
        return None
    if status >= 500 or status in (408, 429) or (retry_redirects and status < 400):
        return SinkUnavailable(f"{name}: HTTP {status}")
    return SinkRejected(f"{name}: HTTP {status}")


# POST url with body and headers; the answer's status and body. AiohttpTransport in production, a fake in tests.
Transport = Callable[[str, bytes, Mapping[str, str]], Awaitable[tuple[int, bytes]]]


class AiohttpTransport:
    """aiohttp's client: sinks post on the event loop that serves requests, and httpx's client cost about 4% of the
    gateway's CPU there (py-spy, the telemetry bench). Upstream calls have their own leaner client
    (gateway/providers/http); a sink posts in batches, off the request path, where aiohttp's cost a call is small."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        if self._session is None:  # made in the running loop, on first use
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        # Never followed: aiohttp would turn a 301/302/303 into a GET without the body, which the target may answer
        # 200 to (the batch counted sent, and lost), and send the credentials to wherever Location points. A 3xx
        # is the sink's answer, mapped as any other (status_failure).
        async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class _HttpSink:
    """What the three sinks share: one transport with the configured timeout, status codes mapped to errors, and
    a cap on the bytes of one request (a batch too big for it goes in several)."""

    kind: ClassVar[str]
    max_batch_bytes: ClassVar[int]  # the type's default cap, when the config sets none

    def __init__(self, name: str, config: SinkConfig, transport: Transport | None = None) -> None:
        self.name = name
        self.config = config
        self.max_bytes = config.max_batch_bytes or self.max_batch_bytes
        self._transport: Transport = transport or AiohttpTransport(config.timeout_s)

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The answer's body; SinkUnavailable or SinkRejected as the sink failed."""
        try:
            status, answer = await self._transport(url, body, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Only the type: a client's message may carry the URL, and a webhook URL may carry a token.
            raise SinkUnavailable(f"{self.name}: {type(exc).__name__}") from None
        failure = status_failure(self.name, status)
        if failure is not None:
            raise failure
        return answer

    async def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        closer = getattr(self._transport, "close", None)
        if closer is not None:
            await closer()


def split_by_size(sizes: Sequence[int], limit: int, overhead: int) -> list[tuple[int, int]]:
    """The [start, end) runs of consecutive encoded items, in order, whose body (`overhead` bytes of its own, the
    items, a comma between two) stays within `limit`; an item bigger than that alone makes a run of its own (the
    sink says whether it takes it)."""
    runs: list[tuple[int, int]] = []
    start, size = 0, overhead
    for i, n in enumerate(sizes):
        if i > start and size + 1 + n > limit:
            runs.append((start, i))
            start, size = i, overhead + n
        else:
            size += n + (1 if i > start else 0)
    if sizes:
        runs.append((start, len(sizes)))
    return runs


class _Refused:
    """The records of a batch's requests the sink refused for good: the other requests still go, and the outbox
    is told how many were refused (SinkRejected.records) once they have."""

    def __init__(self, sink: str, batch: int) -> None:
        self.sink = sink
        self.batch = batch
        self.records = 0
        self.reason = ""

    @contextlib.contextmanager
    def part(self, records: int) -> Iterator[None]:
        try:
            yield
        except SinkRejected as exc:
            self.records += records
            self.reason = str(exc)

    def raise_if_any(self) -> None:
        if self.records:
            raise SinkRejected(f"{self.reason} ({self.records} of {self.batch} records)", records=self.records)


# Langfuse


_EVENT_IDS = uuid.UUID("5b0e1c3a-7d4f-4a53-9a57-3c6f0b1e2d48")  # namespace of the events' uuid5 ids
_EVENT_IDS_SHA1 = hashlib.sha1(_EVENT_IDS.bytes)


def event_id(record_id: str, event_type: str) -> str:
    """The same record and event type always give the same id, so Langfuse dedupes a resent batch.

    uuid.uuid5(_EVENT_IDS, f"{event_type}:{record_id}"), spelt out: the same SHA-1 with its version digit and
    variant bits set in the hex, without building a UUID object (a third of the Langfuse sink's encoding time)."""
    sha1 = _EVENT_IDS_SHA1.copy()  # the namespace hashed once, copied: cheaper than hashing it again
    sha1.update(f"{event_type}:{record_id}".encode())
    h = sha1.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# The RFC 4122 variant: the top two bits of the 17th hex digit are 10.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _tags(record: Record) -> list[str]:
    return [f"{key}:{value}" for key, value in (record.get("tags") or {}).items()]


# langfuse_events runs for every request the gateway serves, on the event loop: about 11 µs of CPU a record on the
# telemetry bench, most of it building small dicts whose values repeat from request to request (a key's project,
# team and names; a route's status, provider and deployment). Those parts are built once per distinct value, the
# key's metadata even serialised once (an orjson Fragment, embedded as is in the batch). typed=True: to a plain
# lru_cache True, 1 and 1.0 are the same key, yet they serialise differently (true, 1, 1.0).


@lru_cache(maxsize=4096, typed=True)
def _key_metadata(project: Any, team: Any, key_name: Any, key_id: Any) -> orjson.Fragment:
    """The trace's metadata for a request that brought no metadata of its own."""
    metadata = {"project": project, "team": team, "key_name": key_name, "key_id": key_id, "request_metadata": {}}
    return orjson.Fragment(orjson.dumps(metadata))


@lru_cache(maxsize=1024, typed=True)
def _route_metadata(
    status: int,
    provider: Any,
    deployment: Any,
    model_requested: Any,
    attempts: Any,
    route_reason: Any,
    stream: Any,
    usage_source: Any,
) -> dict[str, Any]:
    """The generation's metadata but for its spans and guardrails. Shared: copy it before adding to it."""
    return {
        "status": status,
        "provider": provider,
        "deployment": deployment,
        "model_requested": model_requested,
        "attempts": attempts,
        "route_reason": route_reason,
        "stream": stream,
        "usage_source": usage_source,
    }


def _put_content(body: dict[str, Any], content_in: Any, content_out: Any) -> None:
    if content_in:
        body["input"] = content_in
    if content_out:
        body["output"] = content_out


def langfuse_events(record: Record) -> list[dict[str, Any]]:
    """A `trace-create` and a `generation-create` event for one record.

    The generation's id is the record's (the gateway's), the events' ids derive from it. The trace id is the
    request's W3C trace id within its project (tracing.project_trace_id), so requests of one client trace land in
    one Langfuse trace (a later request's trace-create updates the name, input and output the earlier one set), but
    a client sending another project's trace id does not join, nor overwrite, that project's trace. The W3C trace
    id itself is in the generation's metadata. A None is left out of a body, not sent as null: a later request of
    the same trace must not erase the input."""
    get = record.get
    record_id = str(record["id"])
    ts = float(record["ts"])
    start = iso(ts)
    status = int(get("status") or 0)
    w3c_trace_id = record["trace_id"]
    trace_id = None if w3c_trace_id is None else project_trace_id(str(get("project") or ""), str(w3c_trace_id))
    name = get("endpoint")
    content_in = get("content_input")
    content_out = get("content_output")
    user_id = get("user_id")
    tags = get("tags")
    request_metadata = get("metadata")

    trace: dict[str, Any] = {} if trace_id is None else {"id": trace_id}
    trace["timestamp"] = start
    if name is not None:
        trace["name"] = name
    if user_id:
        trace["userId"] = user_id
    _put_content(trace, content_in, content_out)
    trace["tags"] = _tags(record) if tags else []
    if request_metadata:
        trace["metadata"] = {
            "project": get("project"),
            "team": get("team"),
            "key_name": get("key_name"),
            "key_id": get("key_id"),
            # The client's own metadata, nested: spread out, it could claim another project's name.
            "request_metadata": request_metadata,
        }
    else:
        trace["metadata"] = _key_metadata(get("project"), get("team"), get("key_name"), get("key_id"))

    usage_source = get("usage_source")
    metadata = _route_metadata(
        status,
        get("provider"),
        get("deployment"),
        get("model_requested"),
        get("attempts"),
        get("route_reason"),
        get("stream"),
        usage_source,
    ).copy()
    metadata["spans"] = get("spans") or []
    metadata["guardrails"] = get("guardrails") or []
    if w3c_trace_id is not None:
        metadata["trace_id"] = w3c_trace_id
    client_request_id = get("client_request_id")
    if client_request_id:
        metadata["client_request_id"] = client_request_id
    generation: dict[str, Any] = {"id": record_id}
    if trace_id is not None:
        generation["traceId"] = trace_id
    if name is not None:
        generation["name"] = name
    generation["startTime"] = start
    generation["endTime"] = iso(ts + float(get("latency_ms") or 0) / 1000)
    model = otel.model_of(record)
    if model:
        generation["model"] = model
    _put_content(generation, content_in, content_out)
    generation["level"] = "ERROR" if status >= 400 else "DEFAULT"
    generation["metadata"] = metadata
    ttft_ms = get("ttft_ms")
    if ttft_ms is not None:
        generation["completionStartTime"] = iso(ts + float(ttft_ms) / 1000)
    if status >= 400:
        generation["statusMessage"] = get("error_type") or f"HTTP {status}"
    if usage_source != "none":
        # usageDetails: Langfuse counts every key containing "input" as input, "output" as output.
        details = {
            "input": int(get("prompt_tokens") or 0),
            "output": int(get("completion_tokens") or 0),
            "total": int(get("total_tokens") or 0),
        }
        cached_tokens = get("cached_tokens")
        if cached_tokens:
            details["input_cached_tokens"] = int(cached_tokens)
        reasoning_tokens = get("reasoning_tokens")
        if reasoning_tokens:
            details["output_reasoning_tokens"] = int(reasoning_tokens)
        generation["usageDetails"] = details
    cost_usd = get("cost_usd")
    if cost_usd is not None:
        # An ingested cost wins over the one Langfuse would infer from its own price list.
        generation["costDetails"] = {"total": float(cost_usd)}
    return [
        {"id": event_id(record_id, "trace-create"), "timestamp": start, "type": "trace-create", "body": trace},
        {
            "id": event_id(record_id, "generation-create"),
            "timestamp": start,
            "type": "generation-create",
            "body": generation,
        },
    ]


class LangfuseSink(_HttpSink):
    """POST {url}/api/public/ingestion, basic auth public key : secret key.

    Langfuse answers 207 with per-event results. An event refused with 429 or a 5xx makes the whole batch retry
    (event ids are deterministic, so the events already taken are deduped); events refused with another 4xx are
    logged as a count and dropped, since resending them would be refused again."""

    kind = "langfuse"
    max_batch_bytes = 3_000_000  # Langfuse limits a batch to 3.5 MB

    def __init__(self, name: str, config: SinkConfig, transport: Transport | None = None) -> None:
        super().__init__(name, config, transport)
        self.url = config.url.rstrip("/") + "/api/public/ingestion"
        credentials = base64.b64encode(f"{config.public_key}:{config.secret_key}".encode()).decode()
        self._headers = {"content-type": "application/json", **config.headers, "authorization": f"Basic {credentials}"}
        self.rejected_events = 0

    async def write(self, records: Sequence[Record]) -> None:
        # Each record's two events as JSON, so that a batch too big for one request can be cut between records.
        encoded = await map_in_slices(_langfuse_json, records, _SLICE)
        refused = _Refused(self.name, len(records))
        for start, end in split_by_size([len(e) for e in encoded], self.max_bytes, len(_LANGFUSE_BODY % b"")):
            with refused.part(end - start):
                await self._send(_LANGFUSE_BODY % b",".join(encoded[start:end]), events=2 * (end - start))
        refused.raise_if_any()

    async def _send(self, body: bytes, events: int) -> None:
        answer = await self._post(self.url, body, self._headers)
        try:
            result = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return  # a 2xx without the per-event body: everything was taken
        errors = result.get("errors") or [] if isinstance(result, dict) else []
        statuses = [int(e.get("status") or 500) for e in errors if isinstance(e, dict)]
        if any(s >= 500 or s == 429 for s in statuses):
            raise SinkUnavailable(f"{self.name}: {len(statuses)} of {events} events failed, retrying the batch")
        if statuses:
            self.rejected_events += len(statuses)
            logger.warning("langfuse sink %s: %d of %d events rejected", self.name, len(statuses), events)


_LANGFUSE_BODY = b'{"batch":[%s]}'


def _langfuse_json(record: Record) -> bytes:
    return orjson.dumps(langfuse_events(record))[1:-1]


# OTLP


class OtlpSink(_HttpSink):
    """OTLP/HTTP JSON to a collector: POST {url}/v1/traces, then POST {url}/v1/metrics.

    The two requests are not atomic. When the spans of a batch were taken but its metrics were not, the batch
    comes back (the outbox retries it, perhaps cut differently after a stay in the spool): the sink remembers
    which records' spans were taken and sends only the others' again, so that no span is sent twice; metrics go
    last and count each record once, when they are taken (unless the collector took them and its answer was lost:
    delta points cannot be deduped). The memory is per process and bounded (_MAX_TRACED)."""

    kind = "otlp"
    max_batch_bytes = 4_000_000
    _MAX_TRACED = 100_000

    def __init__(self, name: str, config: SinkConfig, transport: Transport | None = None) -> None:
        super().__init__(name, config, transport)
        base = config.url.rstrip("/")
        self.traces_url = base + "/v1/traces"
        self.metrics_url = base + "/v1/metrics"
        self._headers = {"content-type": "application/json", **config.headers}
        self._traced: dict[str, None] = {}  # ids whose spans were taken, whose metrics were not yet

    async def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        untraced = [r for r in records if r["id"] not in self._traced]
        refused = _Refused(self.name, len(records))
        if untraced:
            encoded = await map_in_slices(otel.spans, untraced, _SLICE)
            for start, end in split_by_size([len(e) for e in encoded], self.max_bytes, len(otel.traces_body([]))):
                with refused.part(end - start):
                    await self._post(self.traces_url, otel.traces_body(encoded[start:end]), self._headers)
                # Taken or refused for good: not to be sent again when the batch comes back.
                self._traced.update(dict.fromkeys(r["id"] for r in untraced[start:end]))
            while len(self._traced) > self._MAX_TRACED:
                del self._traced[next(iter(self._traced))]
        first = min(float(r["ts"]) for r in records)
        series = otel.MetricSeries()
        for start in range(0, len(records), _METRICS_SLICE):
            if start:
                await asyncio.sleep(0)
            series.observe(records[start : start + _METRICS_SLICE])
        await self._post(self.metrics_url, orjson.dumps(series.request(first, time.time())), self._headers)
        for record in records:
            self._traced.pop(record["id"], None)
        refused.raise_if_any()


# Segment-compatible webhook

SIGNATURE_HEADER = "X-Gateway-Signature"


def sign(secret: str, body: bytes, t: int) -> str:
    """The X-Gateway-Signature value: t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}." + body, keyed by secret>.

    To verify, a receiver splits the header on "," and "=", recomputes the HMAC over f"{t}.".encode() + the raw
    request body with the shared secret, compares it with v1 using a constant-time comparison
    (hmac.compare_digest), and rejects a t too far from its clock (say 5 minutes) to stop replays."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def segment_event(record: Record) -> dict[str, Any]:
    """A Segment `track` call, "LLM Request", for one record. messageId is the record's id (the gateway's, never
    the client's X-Request-ID, which is `client_request_id` among the properties): Segment and RudderStack dedupe on
    it, so a resent batch is harmless and two requests are never taken for one."""
    user = record.get("user_id") or ""
    properties = {
        key: record.get(key)
        for key in (
            "endpoint",
            "model_requested",
            "model_served",
            "provider",
            "deployment",
            "status",
            "error_type",
            "stream",
            "latency_ms",
            "ttft_ms",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_usd",
            "project",
            "team",
            "key_name",
            "attempts",
            "route_reason",
            "trace_id",
            "client_request_id",
        )
    }
    properties["model"] = otel.model_of(record)
    properties["tags"] = record.get("tags") or {}
    properties["metadata"] = record.get("metadata") or {}
    for key in ("content_input", "content_output"):
        if record.get(key):
            properties[key] = record[key]
    event: dict[str, Any] = {
        "type": "track",
        "event": "LLM Request",
        "messageId": str(record["id"]),
        "timestamp": iso(float(record["ts"])),
        "properties": properties,
        "context": {"library": {"name": "llm-gateway"}},
    }
    if user or record.get("key_name"):
        event["userId"] = user or record["key_name"]
    if not user:
        # Segment needs userId or anonymousId; without an end user the key stands in for one.
        event["anonymousId"] = record.get("key_id") or record.get("key_name") or "anonymous"
    return event


class WebhookBatchSink(_HttpSink):
    """POSTs {"batch": [track...], "sentAt": ...} to the configured URL, as Segment's and RudderStack's batch APIs
    take it; signed with X-Gateway-Signature (see `sign`) when a secret is set. With a write key and a data plane
    URL, to <data_plane_url>/v1/batch as RudderStack and Segment authenticate a source: HTTP Basic, the write key
    as user and an empty password."""

    kind = "webhook"
    max_batch_bytes = 500_000  # Segment's limit for one batch request

    def __init__(self, name: str, config: SinkConfig, transport: Transport | None = None) -> None:
        super().__init__(name, config, transport)
        self.url = config.url
        self._headers = {"content-type": "application/json", **config.headers}
        if config.data_plane_url:
            self.url = config.data_plane_url.rstrip("/") + "/v1/batch"
            credentials = base64.b64encode(f"{config.write_key}:".encode()).decode()
            self._headers["authorization"] = f"Basic {credentials}"

    async def write(self, records: Sequence[Record]) -> None:
        encoded = await map_in_slices(_segment_json, records, _SLICE)
        overhead = len(_SEGMENT_BODY % (b"", iso(0.0).encode()))
        refused = _Refused(self.name, len(records))
        for start, end in split_by_size([len(e) for e in encoded], self.max_bytes, overhead):
            body = _SEGMENT_BODY % (b",".join(encoded[start:end]), iso(time.time()).encode())
            headers = self._headers
            if self.config.secret:
                headers = {**headers, SIGNATURE_HEADER: sign(self.config.secret, body, int(time.time()))}
            with refused.part(end - start):
                await self._post(self.url, body, headers)
        refused.raise_if_any()


_SEGMENT_BODY = b'{"batch":[%s],"sentAt":"%s"}'


def _segment_json(record: Record) -> bytes:
    return orjson.dumps(segment_event(record))


SINKS: dict[str, type[_HttpSink]] = {cls.kind: cls for cls in (LangfuseSink, OtlpSink, WebhookBatchSink)}


def build_sink(name: str, config: SinkConfig, transport: Transport | None = None) -> Sink:
    """The sink a `sinks:` entry of gateway.yaml names; transport is for tests."""
    return SINKS[config.type](name, config, transport)
