"""Ids are the gateway's: whatever X-Request-ID and traceparent clients send, and however many send the same ones
(two tenants, one replaying the other's ids), every request has a record of its own, with its own id, its own
Langfuse events, webhook message and OTLP spans; the client's id is kept beside it, echoed back and filterable;
one tenant's traceparent never joins another tenant's Langfuse trace. Hostile ids are not echoed and break
nothing. Sinks are local receivers; the store is SQLite, read back through the traces API."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import running
from tests.integration.helpers import record_of, wait_until
from tests.servers import serve

HEX32 = re.compile(r"[0-9a-f]{32}")
ADMIN = "sk-admin-ids"
VIEWER_A = "sk-viewer-ids-a"
# Three callers with the same ids to send: two keys of project pa, one of project pb.
CALLERS = {"a1": ("sk-ids-a1", "pa"), "a2": ("sk-ids-a2", "pa"), "b1": ("sk-ids-b1", "pb")}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


@dataclass
class Receiver:
    """What the Langfuse, OTLP and webhook receivers were sent, event by event."""

    langfuse: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def langfuse(request: Request) -> Response:
            batch = orjson.loads(await request.body())["batch"]
            with self.lock:
                self.langfuse += batch
            return JSONResponse({"successes": [{"id": e["id"], "status": 201} for e in batch], "errors": []}, 207)

        async def traces(request: Request) -> Response:
            body = orjson.loads(await request.body())
            with self.lock:
                for resource in body["resourceSpans"]:
                    for scope in resource["scopeSpans"]:
                        self.spans += scope["spans"]
            return JSONResponse({})

        async def metrics(request: Request) -> Response:
            return JSONResponse({})

        async def webhook(request: Request) -> Response:
            batch = orjson.loads(await request.body())["batch"]
            with self.lock:
                self.messages += batch
            return JSONResponse({})

        return Starlette(
            routes=[
                Route("/api/public/ingestion", langfuse, methods=["POST"]),
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/v1/metrics", metrics, methods=["POST"]),
                Route("/hook", webhook, methods=["POST"]),
            ]
        )

    def generations(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {e["body"]["id"]: e for e in self.langfuse if e["type"] == "generation-create"}

    def server_spans(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            found = {}
            for span in self.spans:
                if span["kind"] == 2:
                    attrs = {a["key"]: a["value"] for a in span["attributes"]}
                    found[attrs["gateway.request_id"]["stringValue"]] = span
            return found


@contextlib.contextmanager
def gateway_with_sinks(make_config: Any) -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    sink = {"batch_size": 100, "flush_interval_ms": 20, "max_backoff_s": 0.5}
    keys = [{"name": name, "key": key, "project": project} for name, (key, project) in CALLERS.items()]
    keys.append({"name": "viewer-a", "key": VIEWER_A, "project": "pa", "role": "viewer"})
    with serve(receiver.app()) as sinks_url:
        config = make_config(
            auth={"admin_key": ADMIN, "keys": keys},
            telemetry={
                "sinks": {
                    "langfuse": {"type": "langfuse", "url": sinks_url, "public_key": "pk", "secret_key": "sk", **sink},
                    "otel": {"type": "otlp", "url": sinks_url, **sink},
                    "segment": {"type": "webhook", "url": f"{sinks_url}/hook", **sink},
                }
            },
        )
        with running(config) as (url, _):
            yield url, receiver


def traces(url: str, key: str, **params: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{url}/api/v1/traces", params={**params, "limit": "1000"}, headers={"authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    return rows


@dataclass
class Sent:
    caller: str
    project: str
    client_id: str
    trace: str | None  # the W3C trace id of the traceparent sent, if any
    record_id: str


CLIENT_IDS = st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True)
TRACEPARENTS = st.none() | st.tuples(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda t: t != "0" * 32),
    st.from_regex(r"[0-9a-f]{16}", fullmatch=True).filter(lambda s: s != "0" * 16),
)


def test_callers_sending_the_same_ids_get_records_and_sink_events_of_their_own(make_config, db_path):
    sent: list[Sent] = []
    with gateway_with_sinks(make_config) as (url, receiver), httpx.Client(base_url=url) as client:

        @settings(max_examples=15, deadline=None, database=None)
        @given(client_id=CLIENT_IDS, parent=TRACEPARENTS)
        def same_ids_from_every_caller(client_id: str, parent: tuple[str, str] | None) -> None:
            headers = {"x-request-id": client_id}
            if parent is not None:
                headers["traceparent"] = f"00-{parent[0]}-{parent[1]}-01"
            for caller, (key, project) in CALLERS.items():
                answer = client.post(
                    "/v1/chat/completions", json=CHAT, headers={**headers, "authorization": f"Bearer {key}"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-request-id"] == client_id  # echoed
                record_id = answer.headers["x-gateway-request-id"]
                assert HEX32.fullmatch(record_id)
                sent.append(Sent(caller, project, client_id, parent and parent[0], record_id))

        same_ids_from_every_caller()
        ids = [s.record_id for s in sent]
        assert len(set(ids)) == len(ids)  # three callers per example, each its own record

        # Every record stored, each with the client's id beside its own, each readable by its id.
        for s in sent:
            record = record_of(db_path, s.record_id, timeout=10)
            assert (record["id"], record["client_request_id"], record["project"]) == (
                s.record_id,
                s.client_id,
                s.project,
            )
            assert record["trace_id"] == (s.trace or s.record_id)
        one = httpx.get(f"{url}/api/v1/traces/{sent[0].record_id}", headers={"authorization": f"Bearer {ADMIN}"})
        assert one.json()["client_request_id"] == sent[0].client_id

        # Filterable by the client's id: every caller's record for the admin, its own project's for a viewer.
        by_client: dict[str, set[str]] = defaultdict(set)
        for s in sent:
            by_client[s.client_id].add(s.record_id)
        for client_id, records in by_client.items():
            assert {r["id"] for r in traces(url, ADMIN, client_request_id=client_id)} == records
            own = {s.record_id for s in sent if s.client_id == client_id and s.project == "pa"}
            assert {r["id"] for r in traces(url, VIEWER_A, client_request_id=client_id)} == own

        # Each sink got every record once, under ids of the gateway's.
        assert wait_until(lambda: len(receiver.generations()) >= len(sent), 15)
        assert wait_until(lambda: len(receiver.server_spans()) >= len(sent), 15)
        assert wait_until(lambda: len(receiver.messages) >= len(sent), 15)

    event_ids = [e["id"] for e in receiver.langfuse]
    assert len(event_ids) == len(set(event_ids)) == 2 * len(sent)
    generations = receiver.generations()
    assert set(generations) == set(ids)
    # Langfuse: requests of one W3C trace share a Langfuse trace within a project, never across projects; a
    # request without a traceparent is a trace of its own.
    langfuse_trace = {record_id: g["body"]["traceId"] for record_id, g in generations.items()}
    for a in sent:
        for b in sent:
            same = a.trace is not None and a.trace == b.trace and a.project == b.project
            assert (langfuse_trace[a.record_id] == langfuse_trace[b.record_id]) is (same or a is b)
        assert generations[a.record_id]["body"]["metadata"]["client_request_id"] == a.client_id

    message_ids = [m["messageId"] for m in receiver.messages]
    assert sorted(message_ids) == sorted(ids)
    assert {m["properties"]["client_request_id"] for m in receiver.messages} == {s.client_id for s in sent}

    span_ids = [span["spanId"] for span in receiver.spans]
    assert len(span_ids) == len(set(span_ids))
    server = receiver.server_spans()
    for s in sent:
        # OTLP joins the client's W3C trace (spans only add to one); the span itself is the gateway's.
        assert server[s.record_id]["traceId"] == (s.trace or s.record_id)


# (value, whether the HTTP server's parser may refuse the head before the gateway sees it)
HOSTILE = {
    "huge": (b"A" * 10_000, False),  # far past 128 characters
    "binary": (bytes(range(0x80, 0x100)), False),  # not ASCII
    "crlf-fold": (b"ok\r\n x-injected: 1", True),  # a folded line: a header of its own if echoed raw
    "script": (b"semi;colon <script>", False),
    "tab": (b"tab\there", False),
    "nul": (b"\x00nul", True),
    "empty": (b"", False),
}


def raw_request(url: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (clients refuse to send these headers); the status and head."""
    host, port = url.removeprefix("http://").split(":")
    head = b"POST " if body else b"GET "
    head += path.encode() + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    if body:
        head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[0]


def response_headers(head: bytes) -> dict[bytes, bytes]:
    lines = head.split(b"\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_request_id_is_not_echoed_nor_kept_and_breaks_nothing(gateway_server, db_path, name):
    url, _ = gateway_server
    value, may_be_refused = HOSTILE[name]
    auth = (b"authorization", b"Bearer sk-test-key")
    for path, body in (("/v1/chat/completions", orjson.dumps(CHAT)), ("/v1/models", b""), ("/nowhere", b"")):
        status, head = raw_request(url, path, [auth, (b"x-request-id", value)], body)
        if status == 400 and b"x-gateway-request-id" not in head and may_be_refused:
            continue  # the HTTP server's parser refused the head itself: nothing reached the gateway
        assert status in (200, 404), head
        headers = response_headers(head)
        assert b"x-injected" not in headers
        assert value not in head or not value  # not echoed, in whole...
        assert b"<script>" not in head
        assert b"A" * 200 not in head  # ...or in part
        gateway_id = headers[b"x-gateway-request-id"]
        assert HEX32.fullmatch(gateway_id.decode())
        assert headers[b"x-request-id"] == gateway_id  # the gateway's stands in for what it would not echo
        if path == "/v1/chat/completions":
            assert record_of(db_path, gateway_id.decode())["client_request_id"] == ""


ROUTES = [
    ("POST", "/v1/chat/completions", "sk-test-key", CHAT, 200),
    ("POST", "/v1/chat/completions", "sk-test-key", {**CHAT, "stream": True}, 200),
    ("POST", "/v1/chat/completions", "sk-wrong", CHAT, 401),
    ("POST", "/v1/chat/completions", "sk-test-key", {"model": "demo"}, 400),
    ("POST", "/v1/messages", "sk-test-key", {"model": "demo", "max_tokens": 5, "messages": CHAT["messages"]}, 200),
    ("POST", "/v1/messages", "sk-wrong", {"model": "demo", "max_tokens": 5, "messages": CHAT["messages"]}, 401),
    ("GET", "/v1/models", "sk-test-key", None, 200),
    ("GET", "/v1/models/nope", "sk-test-key", None, 404),
    ("GET", "/admin/keys", "sk-test-key", None, 403),
    ("GET", "/api/v1/traces", "sk-wrong", None, 401),
    ("GET", "/api/v1/traces/export", "sk-wrong", None, 401),
    ("GET", "/no/such/route", "sk-test-key", None, 404),
    ("DELETE", "/v1/models", "sk-test-key", None, 405),
]


@pytest.mark.parametrize(("method", "path", "key", "body", "status"), ROUTES)
def test_every_answer_carries_the_clients_id_and_the_gateways(gateway_server, method, path, key, body, status):
    url, _ = gateway_server
    headers = {"authorization": f"Bearer {key}", "x-request-id": "mine-42"}
    answer = httpx.request(method, f"{url}{path}", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["x-request-id"] == "mine-42"
    gateway_id = answer.headers["x-gateway-request-id"]
    assert HEX32.fullmatch(gateway_id)
    if path == "/v1/messages":  # where Anthropic's SDKs read the request id: the gateway's
        assert answer.headers["request-id"] == gateway_id
    del headers["x-request-id"]
    again = httpx.request(method, f"{url}{path}", json=body, headers=headers)
    assert again.headers["x-request-id"] == again.headers["x-gateway-request-id"] != gateway_id
