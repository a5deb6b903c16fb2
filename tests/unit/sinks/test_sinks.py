from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime

import aiohttp
import httpx
import orjson
import pytest
from hypothesis import given, settings, strategies as st

from gateway.config import ConfigError, parse_config
from gateway.config.telemetry import SinkConfig
from gateway.ids import new_id
from gateway.sinks import otel
from gateway.sinks.exporters import (
    LangfuseSink,
    OtlpSink,
    SinkRejected,
    SinkUnavailable,
    WebhookBatchSink,
    build_sink,
    event_id,
    iso,
    langfuse_events,
    segment_event,
    split_by_size,
)
from gateway.tracecontext import project_trace_id

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def record(**overrides):
    base = {
        "id": "req-1",
        "ts": 1_764_000_000.25,
        "endpoint": "chat/completions",
        "key_name": "team-a-key",
        "key_id": "k1",
        "project": "search",
        "team": "team-a",
        "user_id": "alice",
        "model_requested": "gpt-4o",
        "model_served": "gpt-4o-2024-08-06",
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "status": 200,
        "error_type": "",
        "error_domain": "",
        "stream": False,
        "latency_ms": 1500.0,
        "upstream_ms": 1400.0,
        "ttfb_ms": 300.0,
        "ttft_ms": 320.0,
        "overhead_ms": 2.0,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 120,
        "cost_usd": 0.0012,
        "usage_source": "upstream",
        "spans": [
            {"name": "auth", "start_ms": 0.1, "ms": 0.2},
            {"name": "attempt:openai/gpt-4o:failed", "start_ms": 1.0, "ms": 50.0},
            {"name": "attempt:openai/gpt-4o", "start_ms": 60.0, "ms": 1400.0},
        ],
        "tags": {"env": "prod"},
        "attempts": 2,
        "route_reason": "weighted",
        "guardrails": [],
        "trace_id": TRACE_ID,
        "parent_span_id": "00f067aa0ba902b7",
        "content_input": "hello",
        "content_output": "",
        "metadata": {"feature": "search"},
    }
    return {**base, **overrides}


def transport_of(handler):
    """A sink transport that hands each POST to handler as an httpx.Request and answers with its httpx.Response
    (httpx's types only as a convenient request and response to assert on)."""

    async def send(url: str, body: bytes, headers) -> tuple[int, bytes]:
        response = handler(httpx.Request("POST", url, headers=dict(headers), content=body))
        return response.status_code, response.content

    return send


class Upstream:
    """A sink transport that records the requests and answers from a queue of responses."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if self.responses else httpx.Response(200, json={})

    def client(self):
        return transport_of(self)

    def json(self, i: int = 0):
        return orjson.loads(self.requests[i].content)


def config(kind: str, **options) -> SinkConfig:
    urls = {"langfuse": "https://langfuse.test/", "otlp": "http://collector:4318", "webhook": "https://hooks.test/b"}
    return SinkConfig(type=kind, url=urls[kind], **options)  # type: ignore[arg-type]


def attrs(span) -> dict[str, dict]:
    return {a["key"]: a["value"] for a in span["attributes"]}


# Langfuse


def langfuse(upstream: Upstream) -> LangfuseSink:
    return LangfuseSink("lf", config("langfuse", public_key="pk-lf-1", secret_key="sk-lf-1"), upstream.client())


@pytest.mark.anyio
async def test_langfuse_posts_a_trace_and_a_generation_per_record() -> None:
    upstream = Upstream(httpx.Response(207, json={"successes": [], "errors": []}))
    await langfuse(upstream).write([record(metadata={"feature": "search", "project": "someone-else"})])

    request = upstream.requests[0]
    assert request.url == "https://langfuse.test/api/public/ingestion"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()
    trace, generation = upstream.json()["batch"]
    assert (trace["type"], generation["type"]) == ("trace-create", "generation-create")
    assert trace["body"]["id"] == project_trace_id("search", TRACE_ID)  # the W3C trace within the project
    assert trace["body"]["userId"] == "alice"
    assert trace["body"]["input"] == "hello"
    assert "output" not in trace["body"]
    assert trace["body"]["tags"] == ["env:prod"]
    assert trace["body"]["metadata"]["project"] == "search"  # the client's metadata cannot claim another project
    assert trace["body"]["metadata"]["request_metadata"] == {"feature": "search", "project": "someone-else"}
    body = generation["body"]
    assert body["id"] == "req-1"
    assert body["traceId"] == trace["body"]["id"]
    assert body["metadata"]["trace_id"] == TRACE_ID
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["usageDetails"] == {"input": 100, "output": 20, "total": 120}
    assert body["costDetails"] == {"total": 0.0012}
    assert body["startTime"] == "2025-11-24T16:00:00.250Z"
    assert body["endTime"] == "2025-11-24T16:00:01.750Z"
    assert body["completionStartTime"] == "2025-11-24T16:00:00.570Z"
    assert body["level"] == "DEFAULT"
    assert body["metadata"]["provider"] == "openai"
    assert len(body["metadata"]["spans"]) == 3


@settings(max_examples=50, database=None)
@given(
    client_id=st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True),
    trace_id=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    projects=st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=4, unique=True),
)
def test_records_sharing_the_clients_ids_share_no_sink_id(client_id: str, trace_id: str, projects: list[str]) -> None:
    """Requests of several projects that sent one X-Request-ID and one traceparent: each record's Langfuse events,
    webhook message and OTLP spans have ids of their own (derived from the gateway's record id), so no sink takes
    two for one; Langfuse's trace is shared within a project only; the client's ids are carried, not used as ids."""
    records = [
        record(id=new_id(), project=project, trace_id=trace_id, client_request_id=client_id)
        for project in projects
        for _ in range(2)
    ]
    events = [langfuse_events(r) for r in records]
    event_ids = [e["id"] for pair in events for e in pair]
    assert len(set(event_ids)) == len(event_ids) == 2 * len(records)
    generations = [pair[1]["body"] for pair in events]
    assert len({g["id"] for g in generations}) == len(records)
    assert all(g["metadata"]["client_request_id"] == client_id for g in generations)
    trace_of = {}
    for r, pair in zip(records, events, strict=True):
        trace_of.setdefault(r["project"], set()).add(pair[0]["body"]["id"])
    assert all(len(ids) == 1 for ids in trace_of.values())  # one Langfuse trace per project...
    assert len(set().union(*trace_of.values())) == len(projects)  # ...and none shared across projects

    messages = [segment_event(r) for r in records]
    assert len({m["messageId"] for m in messages}) == len(records)
    assert all(m["properties"]["client_request_id"] == client_id for m in messages)

    spans = [orjson.loads(b"[" + otel.spans(r) + b"]") for r in records]
    span_ids = [s["spanId"] for group in spans for s in group]
    assert len(set(span_ids)) == len(span_ids)
    assert {s["traceId"] for group in spans for s in group} == {trace_id}  # the client's trace, joined
    for group in spans:
        assert attrs(group[0])["gateway.client_request_id"] == {"stringValue": client_id}


def test_event_ids_are_the_uuid5_of_the_record_and_type() -> None:
    # Spelt out for speed; a spooled batch replayed by another version must keep its ids, so they must not drift.
    namespace = uuid.UUID("5b0e1c3a-7d4f-4a53-9a57-3c6f0b1e2d48")
    # Two hundred ids: the variant digit depends on the hash's 17th hex digit, and all sixteen must map right.
    for record_id in ("req-1", "f242cb7714b5000000006033", "é-ünicode", "", *(f"r{i}" for i in range(200))):
        for kind in ("trace-create", "generation-create"):
            assert event_id(record_id, kind) == str(uuid.uuid5(namespace, f"{kind}:{record_id}"))


@pytest.mark.parametrize(
    "ts",
    [
        0.0,
        1_764_000_000.25,
        1_764_000_000.0005,
        1_764_000_000.9995,
        1_764_000_000.9999996,
        1_764_000_059.999,
        951_782_400.5,
    ],
)
def test_iso_matches_datetime(ts: float) -> None:
    # Truncated to the millisecond after datetime's own rounding to the microsecond, minute and day rollovers included.
    assert iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.anyio
async def test_langfuse_event_ids_are_deterministic() -> None:
    upstream = Upstream()
    sink = langfuse(upstream)
    await sink.write([record()])
    await sink.write([record()])
    first, second = upstream.json(0)["batch"], upstream.json(1)["batch"]
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert first[0]["id"] == event_id("req-1", "trace-create") != first[1]["id"]
    other = Upstream()
    await langfuse(other).write([record(id="req-2")])
    assert {e["id"] for e in other.json()["batch"]}.isdisjoint(e["id"] for e in first)


@pytest.mark.anyio
async def test_langfuse_marks_failures_and_leaves_out_unknown_usage() -> None:
    upstream = Upstream()
    await langfuse(upstream).write(
        [record(status=502, error_type="upstream_unavailable", usage_source="none", cost_usd=None, ttft_ms=None)]
    )
    body = upstream.json()["batch"][1]["body"]
    assert body["level"] == "ERROR"
    assert body["statusMessage"] == "upstream_unavailable"
    assert "usageDetails" not in body
    assert "costDetails" not in body
    assert "completionStartTime" not in body


@pytest.mark.anyio
async def test_langfuse_retries_a_batch_with_a_server_error_event() -> None:
    answer = {"successes": [], "errors": [{"id": "x", "status": 500, "message": "boom"}]}
    with pytest.raises(SinkUnavailable):
        await langfuse(Upstream(httpx.Response(207, json=answer))).write([record()])


@pytest.mark.anyio
async def test_langfuse_drops_events_it_rejects(caplog: pytest.LogCaptureFixture) -> None:
    answer = {"successes": [{"id": "a", "status": 201}], "errors": [{"id": "x", "status": 400, "message": "bad"}]}
    sink = langfuse(Upstream(httpx.Response(207, json=answer)))
    await sink.write([record()])
    assert sink.rejected_events == 1
    assert "1 of 2 events rejected" in caplog.text
    assert "bad" not in caplog.text


@pytest.mark.anyio
async def test_langfuse_status_codes() -> None:
    with pytest.raises(SinkRejected) as rejected:
        await langfuse(Upstream(httpx.Response(401))).write([record()])
    assert "sk-lf-1" not in str(rejected.value)
    with pytest.raises(SinkUnavailable):
        await langfuse(Upstream(httpx.Response(503))).write([record()])


@pytest.mark.anyio
async def test_network_errors_are_retryable_and_name_no_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise aiohttp.ClientConnectionError(f"cannot connect to {request.url}")

    client = transport_of(refuse)
    sink = WebhookBatchSink("wh", SinkConfig(type="webhook", url="https://hooks.test/b?token=s3cret"), client)
    with pytest.raises(SinkUnavailable) as unavailable:
        await sink.write([record()])
    assert "s3cret" not in str(unavailable.value)
    assert unavailable.value.__cause__ is None


# OTLP


@pytest.mark.anyio
async def test_otlp_exports_a_server_span_with_genai_attributes_and_children() -> None:
    upstream = Upstream()
    await OtlpSink("otel", config("otlp", headers={"x-tenant": "t1"}), upstream.client()).write([record()])

    traces = upstream.requests[0]
    assert traces.url == "http://collector:4318/v1/traces"
    assert traces.headers["content-type"] == "application/json"
    assert traces.headers["x-tenant"] == "t1"
    resource_spans = upstream.json(0)["resourceSpans"]
    assert attrs(resource_spans[0]["resource"])["service.name"] == {"stringValue": "llm-gateway"}
    scope = resource_spans[0]["scopeSpans"][0]
    assert scope["scope"]["name"] == "gateway"
    root, *children = scope["spans"]
    assert root["traceId"] == TRACE_ID
    assert root["parentSpanId"] == "00f067aa0ba902b7"
    assert len(root["spanId"]) == 16
    assert root["name"] == "chat gpt-4o-2024-08-06"
    assert root["kind"] == otel.SPAN_KIND_SERVER
    assert root["startTimeUnixNano"] == "1764000000250000000"
    assert root["endTimeUnixNano"] == "1764000001750000000"
    assert root["status"] == {}
    a = attrs(root)
    assert a["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert a["gen_ai.provider.name"] == {"stringValue": "openai"}
    assert a["gen_ai.system"] == {"stringValue": "openai"}
    assert a["gen_ai.request.model"] == {"stringValue": "gpt-4o"}
    assert a["gen_ai.response.model"] == {"stringValue": "gpt-4o-2024-08-06"}
    assert a["gen_ai.usage.input_tokens"] == {"intValue": "100"}
    assert a["gen_ai.usage.output_tokens"] == {"intValue": "20"}
    assert a["http.response.status_code"] == {"intValue": "200"}
    assert a["gateway.cost_usd"] == {"doubleValue": 0.0012}
    assert a["gateway.stream"] == {"boolValue": False}
    assert a["gateway.project"] == {"stringValue": "search"}
    assert "error.type" not in a

    assert len(children) == 3
    assert {c["parentSpanId"] for c in children} == {root["spanId"]}
    assert {c["traceId"] for c in children} == {TRACE_ID}
    assert len({root["spanId"], *(c["spanId"] for c in children)}) == 4
    failed, served = children[1], children[2]
    assert failed["name"] == "attempt:openai/gpt-4o:failed"
    assert failed["status"]["code"] == otel.STATUS_ERROR
    assert served["kind"] == otel.SPAN_KIND_INTERNAL
    assert served["startTimeUnixNano"] == "1764000000310000000"
    assert served["endTimeUnixNano"] == "1764000001710000000"


@pytest.mark.anyio
async def test_otlp_marks_an_error_status_and_has_no_parent_without_one() -> None:
    upstream = Upstream()
    sink = OtlpSink("otel", config("otlp"), upstream.client())
    await sink.write([record(status=502, error_type="upstream_unavailable", parent_span_id="", spans=[])])
    [root] = upstream.json(0)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert root["status"] == {"code": 2, "message": "upstream_unavailable"}
    assert attrs(root)["error.type"] == {"stringValue": "upstream_unavailable"}
    assert attrs(root)["http.response.status_code"] == {"intValue": "502"}
    assert "parentSpanId" not in root


@pytest.mark.anyio
async def test_otlp_root_attributes_are_each_records_own() -> None:
    # The repeating attributes are encoded once per combination: a record must never get another's.
    upstream = Upstream()
    records = [
        record(id="r1"),
        record(id="r2", stream=True, attempts=1, cost_usd=None, ttft_ms=None, tags={}, metadata={}),
        record(id="r3", status=429, error_type="rate_limited", error_domain="upstream", usage_source="none"),
        record(id="r4", stream=1, project="other", metadata={"tenant": 'quote " and \\ slash'}),
        record(id="r5"),
        # r2 but for attempts True: to a plain cache key, True and 1 are the same.
        record(id="r6", stream=True, attempts=True, cost_usd=None, ttft_ms=None, tags={}, metadata={}),
        # Tags that are not all text (encoded apart, never cached as r1's), and one whose only tag is left out.
        record(id="r7", tags={"env": "prod", "tier": 2}, metadata={}),
        record(id="r8", tags={"env": None}, metadata={}, cost_usd=None, ttft_ms=None),
    ]
    await OtlpSink("otel", config("otlp"), upstream.client()).write(records)
    roots = [
        s for s in upstream.json(0)["resourceSpans"][0]["scopeSpans"][0]["spans"] if "gateway.request_id" in attrs(s)
    ]
    by_id = {attrs(r)["gateway.request_id"]["stringValue"]: attrs(r) for r in roots}
    assert by_id["r1"] == by_id["r5"] | {"gateway.request_id": {"stringValue": "r1"}}
    assert by_id["r1"]["gateway.stream"] == {"boolValue": False}
    assert by_id["r1"]["gateway.attempts"] == {"intValue": "2"}
    assert by_id["r1"]["gateway.cost_usd"] == {"doubleValue": 0.0012}
    assert by_id["r1"]["gateway.ttft_ms"] == {"doubleValue": 320.0}
    assert by_id["r1"]["gateway.tag.env"] == {"stringValue": "prod"}
    assert by_id["r2"]["gateway.stream"] == {"boolValue": True}
    assert by_id["r2"]["gateway.attempts"] == {"intValue": "1"}
    assert {"gateway.cost_usd", "gateway.ttft_ms", "gateway.tag.env", "gateway.metadata.feature"}.isdisjoint(
        by_id["r2"]
    )
    assert by_id["r3"]["http.response.status_code"] == {"intValue": "429"}
    assert by_id["r3"]["error.type"] == {"stringValue": "rate_limited"}
    assert by_id["r3"]["gateway.error_domain"] == {"stringValue": "upstream"}
    assert "gen_ai.usage.input_tokens" not in by_id["r3"]
    assert "error.type" not in by_id["r1"]
    assert "gateway.error_domain" not in by_id["r1"]
    assert by_id["r4"]["gateway.stream"] == {"intValue": "1"}  # each value its own type, not r2's True
    assert by_id["r6"]["gateway.attempts"] == {"boolValue": True}
    assert by_id["r4"]["gateway.project"] == {"stringValue": "other"}
    assert by_id["r4"]["gateway.metadata.tenant"] == {"stringValue": 'quote " and \\ slash'}
    assert by_id["r7"]["gateway.tag.env"] == {"stringValue": "prod"}
    assert by_id["r7"]["gateway.tag.tier"] == {"intValue": "2"}
    assert "gateway.tag.env" not in by_id["r8"]


@pytest.mark.anyio
async def test_otlp_span_ids_are_stable_across_resends() -> None:
    upstream = Upstream()
    sink = OtlpSink("otel", config("otlp"), upstream.client())
    await sink.write([record()])
    await sink.write([record()])
    ids = [[s["spanId"] for s in upstream.json(i)["resourceSpans"][0]["scopeSpans"][0]["spans"]] for i in (0, 2)]
    assert ids[0] == ids[1]


def test_otlp_root_span_id_is_pinned_to_the_record_id() -> None:
    # A resent batch, even from another version (the spool), must give the same span ids.
    for record_id in ("req-1", "", "é", *(f"r{i}" for i in range(50))):
        expected = int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8).digest(), "big") or 1
        assert otel._span_number(record_id) == expected


@pytest.mark.parametrize("root", [1, 0x1234_5678_9ABC_DE00, 0x1234_5678_9ABC_DEF5, 2**64 - 3, 2**64 - 1])
@pytest.mark.parametrize("children", [0, 1, 9, 11, 300])
def test_otlp_child_span_ids_follow_the_root_past_a_carry_and_the_wrap(
    monkeypatch: pytest.MonkeyPatch, root: int, children: int
) -> None:
    # A child's id is the root's plus its rank, written as 16 hex digits, skipping the invalid all-zero id on
    # wrapping past 2**64: the last byte from a table while no carry leaves it, formatted in full otherwise.
    monkeypatch.setattr(otel, "_span_number", lambda record_id: root)
    phases = [{"name": f"p{i}", "start_ms": 0.5 * i, "ms": 0.25} for i in range(children)]
    spans = orjson.loads(b"[" + otel.spans(record(spans=phases)) + b"]")
    assert spans[0]["spanId"] == f"{root:016x}"
    expected = [f"{(root + i) & (2**64 - 1) or 1:016x}" for i in range(1, children + 1)]
    assert [s["spanId"] for s in spans[1:]] == expected
    assert {s["parentSpanId"] for s in spans[1:]} <= {f"{root:016x}"}
    assert [s["name"] for s in spans[1:]] == [p["name"] for p in phases]


@pytest.mark.anyio
async def test_otlp_sends_token_and_duration_metrics() -> None:
    upstream = Upstream()
    records = [
        record(),
        record(id="req-2", prompt_tokens=50, completion_tokens=5),
        record(id="req-3", usage_source="none"),
    ]
    await OtlpSink("otel", config("otlp"), upstream.client()).write(records)

    assert upstream.requests[1].url == "http://collector:4318/v1/metrics"
    scope = upstream.json(1)["resourceMetrics"][0]["scopeMetrics"][0]
    metrics = {m["name"]: m for m in scope["metrics"]}
    usage = metrics["gen_ai.client.token.usage"]["histogram"]
    assert usage["aggregationTemporality"] == otel.TEMPORALITY_DELTA
    by_type = {attrs(p)["gen_ai.token.type"]["stringValue"]: p for p in usage["dataPoints"]}
    assert by_type["input"]["sum"] == 150
    assert by_type["input"]["count"] == "2"  # req-3's usage is unknown, not zero
    assert by_type["output"]["sum"] == 25
    assert attrs(by_type["input"])["gen_ai.request.model"] == {"stringValue": "gpt-4o"}
    for point in usage["dataPoints"]:
        assert len(point["bucketCounts"]) == len(point["explicitBounds"]) + 1
        assert sum(int(c) for c in point["bucketCounts"]) == int(point["count"])
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration["unit"] == "s"
    [point] = duration["histogram"]["dataPoints"]
    assert point["count"] == "3"
    assert point["sum"] == pytest.approx(4.5)


@pytest.mark.anyio
async def test_otlp_failure_of_either_request_raises() -> None:
    with pytest.raises(SinkUnavailable):
        await OtlpSink("otel", config("otlp"), Upstream(httpx.Response(503)).client()).write([record()])
    upstream = Upstream(httpx.Response(200), httpx.Response(429))
    with pytest.raises(SinkUnavailable):
        await OtlpSink("otel", config("otlp"), upstream.client()).write([record()])
    assert len(upstream.requests) == 2


# Webhook (Segment-compatible)


@pytest.mark.anyio
async def test_webhook_posts_a_segment_batch() -> None:
    upstream = Upstream()
    sink = WebhookBatchSink("wh", config("webhook", headers={"authorization": "Basic d2s6"}), upstream.client())
    await sink.write([record(), record(id="req-2", user_id="")])

    request = upstream.requests[0]
    assert request.url == "https://hooks.test/b"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Basic d2s6"
    assert "x-gateway-signature" not in request.headers
    payload = upstream.json()
    assert payload["sentAt"].endswith("Z")
    first, second = payload["batch"]
    assert first["type"] == "track"
    assert first["event"] == "LLM Request"
    assert first["messageId"] == "req-1"
    assert first["timestamp"] == "2025-11-24T16:00:00.250Z"
    assert first["userId"] == "alice"
    assert "anonymousId" not in first
    assert first["context"] == {"library": {"name": "llm-gateway"}}
    props = first["properties"]
    assert props["model"] == "gpt-4o-2024-08-06"
    assert props["provider"] == "openai"
    assert (props["prompt_tokens"], props["completion_tokens"], props["total_tokens"]) == (100, 20, 120)
    assert props["cost_usd"] == 0.0012
    assert props["project"] == "search"
    assert second["userId"] == "team-a-key"
    assert second["anonymousId"] == "k1"


@pytest.mark.anyio
async def test_webhook_signature_verifies() -> None:
    upstream = Upstream()
    await WebhookBatchSink("wh", config("webhook", secret="whsec"), upstream.client()).write([record()])
    request = upstream.requests[0]
    fields = dict(part.split("=", 1) for part in request.headers["x-gateway-signature"].split(","))
    expected = hmac.new(b"whsec", f"{fields['t']}.".encode() + request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert "whsec" not in request.headers["x-gateway-signature"]


@pytest.mark.anyio
async def test_webhook_status_codes() -> None:
    with pytest.raises(SinkUnavailable):
        await WebhookBatchSink("wh", config("webhook"), Upstream(httpx.Response(429)).client()).write([record()])
    with pytest.raises(SinkUnavailable):
        await WebhookBatchSink("wh", config("webhook"), Upstream(httpx.Response(408)).client()).write([record()])
    with pytest.raises(SinkRejected):
        await WebhookBatchSink("wh", config("webhook"), Upstream(httpx.Response(400)).client()).write([record()])


@pytest.mark.anyio
async def test_build_sink_picks_the_class_by_type() -> None:
    for kind, cls in (("langfuse", LangfuseSink), ("otlp", OtlpSink), ("webhook", WebhookBatchSink)):
        sink = build_sink(f"my-{kind}", config(kind))
        assert isinstance(sink, cls)
        assert sink.name == f"my-{kind}"
        await sink.close()


@pytest.mark.anyio
async def test_otlp_spans_taken_before_the_metrics_failed_are_not_sent_again_on_the_retry():
    traced: list[str] = []
    metrics_down = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/metrics":
            return httpx.Response(503 if metrics_down[0] else 200, json={})
        body = orjson.loads(request.content)
        for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            if span["kind"] == 2:
                traced.append(
                    next(a["value"]["stringValue"] for a in span["attributes"] if a["key"] == "gateway.request_id")
                )
        return httpx.Response(200, json={})

    config = SinkConfig(type="otlp", url="http://collector")
    sink = OtlpSink("otel", config, transport_of(handler))
    first, second = record(id="a"), record(id="b")
    with pytest.raises(SinkUnavailable):
        await sink.write([first])
    metrics_down[0] = False
    await sink.write([first, second])  # the retry, cut differently after a stay in the spool
    assert traced == ["a", "b"]
    await sink.write([first])  # a later batch with the same record is a new delivery: its spans go again
    assert traced == ["a", "b", "a"]


@pytest.mark.anyio
async def test_langfuse_metadata_is_each_records_own() -> None:
    # The repeating metadata is built once per combination of values: a record must never get another's.
    upstream = Upstream()
    records = [
        record(id="r1"),
        record(id="r2", project="other", team="team-b", key_name="b-key", key_id="k2", metadata={}),
        record(id="r3", status=502, error_type="upstream_unavailable", provider="azure", deployment="azure/gpt-4o"),
        record(id="r4", stream=True, attempts=1, route_reason="fallback", usage_source="none", metadata=None),
        record(id="r8", stream=True),
        record(id="r5", stream=1),  # from a database row: equal to r8's True as a key, not in the JSON
        record(id="r6", metadata={}),
        record(id="r7"),
    ]
    await langfuse(upstream).write(records)
    batch = upstream.json()["batch"]
    trace_of = {r["id"]: e["body"] for r, e in zip(records, batch[0::2], strict=True)}
    generations = {e["body"]["id"]: e["body"] for e in batch[1::2]}
    key_metadata = {"project": "search", "team": "team-a", "key_name": "team-a-key", "key_id": "k1"}
    assert trace_of["r1"]["metadata"] == key_metadata | {"request_metadata": {"feature": "search"}}
    assert trace_of["r2"]["metadata"] == {
        "project": "other",
        "team": "team-b",
        "key_name": "b-key",
        "key_id": "k2",
        "request_metadata": {},
    }
    assert trace_of["r4"]["metadata"] == trace_of["r6"]["metadata"] == key_metadata | {"request_metadata": {}}
    assert trace_of["r7"]["metadata"] == trace_of["r1"]["metadata"]
    route = {
        "status": 200,
        "provider": "openai",
        "deployment": "openai/gpt-4o",
        "model_requested": "gpt-4o",
        "attempts": 2,
        "route_reason": "weighted",
        "stream": False,
        "usage_source": "upstream",
    }
    meta = {i: {k: v for k, v in g["metadata"].items() if k in route} for i, g in generations.items()}
    assert meta["r1"] == meta["r2"] == meta["r6"] == meta["r7"] == route
    assert meta["r3"] == route | {"status": 502, "provider": "azure", "deployment": "azure/gpt-4o"}
    assert generations["r3"]["level"] == "ERROR"
    assert generations["r1"]["level"] == "DEFAULT"
    assert meta["r4"] == route | {"stream": True, "attempts": 1, "route_reason": "fallback", "usage_source": "none"}
    assert "usageDetails" not in generations["r4"]
    assert "usageDetails" in generations["r1"]
    r5 = generations["r5"]["metadata"]
    assert r5["stream"] == 1
    assert r5["stream"] is not True  # the record's 1, not r4's cached true
    assert generations["r8"]["metadata"]["stream"] is True
    assert all(len(g["metadata"]["spans"]) == 3 for g in generations.values())


# Requests within a size


def test_split_by_size_keeps_order_and_each_run_within_the_limit():
    # overhead 10, items of 30: two fit in 10 + 30 + 1 + 30 = 71 <= 75, a third would not.
    assert split_by_size([30, 30, 30, 30, 30], 75, 10) == [(0, 2), (2, 4), (4, 5)]
    assert split_by_size([100, 5, 5], 50, 10) == [(0, 1), (1, 3)]  # too big for any request: alone
    assert split_by_size([], 50, 10) == []
    assert split_by_size([5, 5, 5], 10_000, 10) == [(0, 3)]


def test_max_batch_bytes_below_a_kilobyte_is_refused():
    sink = "{type: otlp, url: 'http://collector:4318', max_batch_bytes: 100}"
    with pytest.raises(ConfigError) as err:
        parse_config(f"telemetry: {{sinks: {{otel: {sink}}}}}")
    assert "telemetry.sinks.otel.max_batch_bytes: must be at least 1024" in str(err.value)


def test_an_events_webhook_without_a_scheme_or_with_no_timeout_is_refused():
    with pytest.raises(ConfigError) as err:
        parse_config("routing: {events_webhook: {url: 'hooks.test/x', timeout_s: 0}}")
    assert "routing.events_webhook.url: must be an http:// or https:// URL" in str(err.value)
    assert "timeout_s must be positive" in str(err.value)


def big_records(n: int) -> list[dict]:
    # About 1.5 KB of content each: a few per request under a 4,000-byte cap.
    return [record(id=f"big-{i}", content_input="q" * 700, content_output="a" * 700) for i in range(n)]


@pytest.mark.anyio
async def test_langfuse_cuts_a_batch_too_big_for_one_request_between_records() -> None:
    upstream = Upstream()
    sink = LangfuseSink(
        "lf", config("langfuse", public_key="pk", secret_key="sk", max_batch_bytes=8000), upstream.client()
    )
    await sink.write(big_records(7))
    assert len(upstream.requests) > 1
    assert all(len(r.content) <= 8000 for r in upstream.requests)
    events = [e for i in range(len(upstream.requests)) for e in upstream.json(i)["batch"]]
    assert [e["body"]["id"] for e in events if e["type"] == "generation-create"] == [f"big-{i}" for i in range(7)]
    assert len(events) == 14  # each record's two events together, each once


def request_ids(request: httpx.Request) -> list[str]:
    spans = orjson.loads(request.content)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return [a["value"]["stringValue"] for s in spans for a in s["attributes"] if a["key"] == "gateway.request_id"]


@pytest.mark.anyio
async def test_otlp_cuts_spans_by_size_and_resends_only_what_was_not_taken() -> None:
    upstream = Upstream(httpx.Response(200, json={}), httpx.Response(503))
    sink = OtlpSink("otel", config("otlp", max_batch_bytes=4000), upstream.client())
    records = big_records(4)  # about 3 KB of spans each: one a request
    with pytest.raises(SinkUnavailable):
        await sink.write(records)  # the first request's spans are taken, the second's are not
    await sink.write(records)  # the outbox retries the batch
    taken = [r for i, r in enumerate(upstream.requests) if i != 1 and r.url.path == "/v1/traces"]
    assert all(len(r.content) <= 4000 for r in taken)
    assert request_ids(upstream.requests[1]) == ["big-1"]  # refused, then sent again
    assert [i for r in taken for i in request_ids(r)] == [f"big-{i}" for i in range(4)]  # none twice, in order
    assert upstream.requests[-1].url.path == "/v1/metrics"


@pytest.mark.anyio
async def test_webhook_cuts_a_batch_by_size_and_signs_each_request() -> None:
    upstream = Upstream()
    sink = WebhookBatchSink("wh", config("webhook", secret="whsec", max_batch_bytes=4000), upstream.client())
    await sink.write(big_records(6))
    assert len(upstream.requests) > 1
    ids = []
    for i, request in enumerate(upstream.requests):
        assert len(request.content) <= 4000
        fields = dict(part.split("=", 1) for part in request.headers["x-gateway-signature"].split(","))
        expected = hmac.new(b"whsec", f"{fields['t']}.".encode() + request.content, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected)
        ids += [e["messageId"] for e in upstream.json(i)["batch"]]
    assert ids == [f"big-{i}" for i in range(6)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["langfuse", "otlp", "webhook"])
async def test_a_request_refused_in_the_middle_of_a_batch_costs_only_its_records(kind: str) -> None:
    # The second of four requests is refused (say a 413): the third and fourth still go, and the outbox is told
    # that one record of four was refused.
    ok = httpx.Response(200, json={})
    upstream = Upstream(ok, httpx.Response(413), ok, ok, ok)
    options = {"public_key": "pk", "secret_key": "sk"} if kind == "langfuse" else {}
    sink = build_sink(kind, config(kind, max_batch_bytes=4000, **options), upstream.client())
    with pytest.raises(SinkRejected) as refused:
        await sink.write(big_records(4))
    assert refused.value.records == 1
    paths = [r.url.path for r in upstream.requests]
    assert len([p for p in paths if p != "/v1/metrics"]) == 4  # one request a record, none skipped
    if kind == "otlp":
        assert paths[-1] == "/v1/metrics"  # every record counted in the metrics, once


# Redirects, through the real transport (aiohttp)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["langfuse", "otlp", "webhook"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_the_sinks_answer_never_followed(kind: str, status: int) -> None:
    """aiohttp had followed it: a 301/302/303 as a GET without the body, which the target answered 200, so that the
    batch was counted sent and lost; and the credentials went wherever Location pointed. Now the 3xx is refused
    like any answer that is not a success, so the records go to the dead letters, and nothing follows."""
    import http.server
    import threading

    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append((self.command, self.path))
            if self.path.startswith("/elsewhere"):
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(status)
            self.send_header("location", "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    options = {"public_key": "pk", "secret_key": "sk"} if kind == "langfuse" else {}
    sink = build_sink("s", SinkConfig(type=kind, url=base + ("/hook" if kind == "webhook" else ""), **options))  # type: ignore[arg-type]
    try:
        with pytest.raises(SinkRejected) as refused:
            await sink.write([record()])
    finally:
        await sink.close()
        server.shutdown()
        server.server_close()
    assert f"HTTP {status}" in str(refused.value)
    assert seen
    assert not any(path.startswith("/elsewhere") for _, path in seen)
