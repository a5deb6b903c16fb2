"""The sinks survive their outages under load: Langfuse, an OTLP collector and a webhook receiver (local mock
servers) go down for 30 s while requests keep coming, then come back. Every record reaches every sink exactly
once, in the order the store wrote them, and the counts agree: requests made = records in the store = records
each sink received = the sink's `sent` metric.

The Langfuse and OTLP mocks answer 503 while down; the webhook's server is stopped outright (connections refused)
and started again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import KEY, running
from tests.integration.helpers import wait_until
from tests.services import free_port

OUTAGE_S = float(os.environ.get("GATEWAY_TEST_OUTAGE_S", "30"))
HEADERS = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


class Receiver:
    """What each mock sink received, in arrival order (by request id), and whether it is down."""

    def __init__(self) -> None:
        self.down = False
        self.langfuse: list[str] = []
        self.otlp: list[str] = []
        self.otlp_metrics = 0
        self.webhook: list[str] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def langfuse(request: Request) -> Response:
            if self.down:
                return Response(status_code=503)
            batch = orjson.loads(await request.body())["batch"]
            ids = [e["body"]["id"] for e in batch if e["type"] == "generation-create"]
            with self.lock:
                self.langfuse += ids
            return JSONResponse({"successes": [{"id": e["id"], "status": 201} for e in batch], "errors": []}, 207)

        async def traces(request: Request) -> Response:
            if self.down:
                return Response(status_code=503)
            body = orjson.loads(await request.body())
            ids = []
            for resource in body["resourceSpans"]:
                for scope in resource["scopeSpans"]:
                    for span in scope["spans"]:
                        if span["kind"] == 2:  # SERVER: the request's own span
                            attrs = {a["key"]: a["value"] for a in span["attributes"]}
                            ids.append(attrs["gateway.request_id"]["stringValue"])
            with self.lock:
                self.otlp += ids
            return JSONResponse({})

        async def metrics(request: Request) -> Response:
            if self.down:
                return Response(status_code=503)
            self.otlp_metrics += 1
            return JSONResponse({})

        async def webhook(request: Request) -> Response:
            batch = orjson.loads(await request.body())["batch"]
            with self.lock:
                self.webhook += [event["messageId"] for event in batch]
            return JSONResponse({"ok": True})

        return Starlette(
            routes=[
                Route("/api/public/ingestion", langfuse, methods=["POST"]),
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/v1/metrics", metrics, methods=["POST"]),
                Route("/hook", webhook, methods=["POST"]),
            ]
        )


@contextlib.contextmanager
def serve_on(app: Any, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 10)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _store_order(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM model_cost_logs ORDER BY rowid")]


def _sent(url: str, sink: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("gateway_sink_records_total{") and f'sink="{sink}"' in line and 'outcome="sent"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_three_sinks_down_for_30_s_under_load_lose_nothing_and_send_nothing_twice(make_config, tmp_path, db_path):
    receiver = Receiver()
    mock_port, hook_port = free_port(), free_port()
    base, hook = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{hook_port}"
    sink = {"batch_size": 50, "flush_interval_ms": 50, "max_backoff_s": 1.0, "timeout_s": 2.0}
    config = make_config(
        auth={"admin_key": "sk-admin"},
        telemetry={
            "sinks": {
                "langfuse": {"type": "langfuse", "url": base, "public_key": "pk-lf", "secret_key": "sk-lf", **sink},
                "otel": {"type": "otlp", "url": base, **sink},
                "events": {"type": "webhook", "url": f"{hook}/hook", "secret": "s3cret", **sink},
            },
        },
    )
    sent = 0
    with serve_on(receiver.app(), mock_port), running(config) as (url, gateway):
        webhook_server = contextlib.ExitStack()
        webhook_server.enter_context(serve_on(receiver.app(), hook_port))
        with httpx.Client(base_url=url, headers=HEADERS) as client:

            def load(seconds: float) -> None:
                nonlocal sent
                end, first = time.monotonic() + seconds, sent
                # As long as asked and at least 25 requests a second's worth: a slow machine sends as many.
                while time.monotonic() < end or sent - first < 25 * seconds:
                    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                    sent += 1
                    time.sleep(0.01)

            load(1.0)
            receiver.down = True
            webhook_server.close()  # connections refused from now on
            load(OUTAGE_S)
            status = client.get("/api/v1/telemetry/status", headers={"authorization": "Bearer sk-admin"}).json()
            receiver.down = False
            webhook_server.enter_context(serve_on(receiver.app(), hook_port))
            load(1.0)
        assert wait_until(lambda: len(receiver.webhook) >= sent and len(receiver.langfuse) >= sent, 30)
        assert wait_until(lambda: len(receiver.otlp) >= sent, 30)
        time.sleep(0.5)  # anything sent twice would arrive now
        webhook_server.close()
        counts = {name: _sent(url, name) for name in ("langfuse", "otel", "events")}
        store_order = _store_order(db_path)
        assert gateway.queue.dropped == 0
    assert sent > 100
    assert len(store_order) == sent == len(set(store_order))
    for name, received in (("langfuse", receiver.langfuse), ("otel", receiver.otlp), ("events", receiver.webhook)):
        assert received == store_order, f"{name}: not every record exactly once, in order"
        assert counts[name] == sent
    assert receiver.otlp_metrics > 0
    # While down, each sink said so: records waiting in its spool, none dropped.
    for name in ("langfuse", "otel", "events"):
        stats = status["sinks"][name]
        assert (stats["spooled"] > 0, stats["dropped"]) == (True, 0), (name, stats)
