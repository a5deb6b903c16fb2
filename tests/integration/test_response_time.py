"""X-Response-Time on every kind of answer the gateway sends, over real sockets: the pipeline's (whole, streamed,
refused), Anthropic's ingress, the admin and query API, health, metrics, unknown routes, and the server's own
refusals; never less than the gateway's own part of it (x-gateway-overhead-ms)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running

ADMIN = "sk-admin-bootstrap"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
VALUE = re.compile(r"\d+\.\d{3}ms")  # express's and koa's response-time: three decimals and the unit


def response_time(headers: Any) -> float:
    value = headers["x-response-time"]
    assert VALUE.fullmatch(value), value
    return float(value[:-2])


def at_least_overhead(response: httpx.Response) -> float:
    total = response_time(response.headers)
    assert total >= float(response.headers["x-gateway-overhead-ms"])
    return total


@pytest.fixture
def server(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[str, Gateway]]:
    config = make_config(auth={"admin_key": ADMIN}, server={"max_header_bytes": 4096, "body_timeout_s": 0.3})
    with running(config) as running_server:
        yield running_server


def test_pipeline_answers_carry_it_and_it_covers_the_overhead(server: tuple[str, Gateway]) -> None:
    url, _ = server
    key = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, headers=key) as client:
        at_least_overhead(client.post("/v1/chat/completions", json=CHAT))
        at_least_overhead(client.post("/v1/embeddings", json={"model": "demo-embedding", "input": "hi"}))
        at_least_overhead(client.post("/v1/messages", json=MESSAGE))
        at_least_overhead(client.post("/v1/messages/count_tokens", json={k: MESSAGE[k] for k in ("model", "messages")}))
        stored = client.post("/v1/responses", json={"model": "demo", "input": "hi"})
        at_least_overhead(stored)
        response_time(client.get(f"/v1/responses/{stored.json()['id']}").headers)
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/responses", {"model": "demo", "input": "hi"})):
            with client.stream("POST", path, json={**body, "stream": True}) as stream:
                assert stream.status_code == 200
                at_least_overhead(stream)
        # refused: by the pipeline (unknown model), at the door (no key), before the pipeline (a body not JSON)
        for response in (
            client.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"}),
            client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong"}),
            client.post("/v1/chat/completions", content=b"{not json"),
            client.post("/v1/messages", json={"model": "demo"}),
        ):
            assert response.status_code >= 400
            at_least_overhead(response)


def test_a_streams_time_is_the_time_to_its_headers(server: tuple[str, Gateway]) -> None:
    url, _ = server
    start = time.perf_counter()
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**CHAT, "model": "slow-stream", "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
    ) as stream:  # fmt: skip
        headers_ms = response_time(stream.headers)
        chunks = sum(1 for _ in stream.iter_lines())
    total_ms = (time.perf_counter() - start) * 1000
    assert chunks > 3  # 30 ms between chunks: the whole stream takes longer than its headers by far
    assert headers_ms < total_ms - 60


def test_every_other_answer_carries_it(server: tuple[str, Gateway]) -> None:
    url, _ = server
    admin = {"Authorization": f"Bearer {ADMIN}"}
    responses = [
        httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}),
        httpx.get(f"{url}/admin/keys", headers=admin),
        httpx.get(f"{url}/admin/keys"),  # 401
        httpx.get(f"{url}/admin/deployments", headers=admin),
        httpx.get(f"{url}/api/v1/traces", headers=admin),
        httpx.get(f"{url}/health/live"),
        httpx.get(f"{url}/health/ready"),
        httpx.get(f"{url}/metrics"),
        httpx.get(f"{url}/no/such/route"),  # 404
        httpx.put(f"{url}/health/live"),  # 405
        httpx.head(f"{url}/health/live"),
    ]
    assert {r.status_code for r in responses} >= {200, 401, 404, 405}
    for response in responses:
        assert response_time(response.headers) >= 0, response.request.url


def raw_answer(url: str, data: bytes) -> bytes:
    """What the server answers on a connection of its own to `data`, read until it closes."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_the_servers_own_refusals_carry_it(server: tuple[str, Gateway]) -> None:
    url, _ = server
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n"
    refusals = {
        b"431": head + b"x-fill: " + b"f" * 5000 + b"\r\n\r\n",  # past server.max_header_bytes
        b"408": head + b"authorization: Bearer " + KEY.encode() + b"\r\n\r\n{",  # the body stops arriving
        b"400": b"NOT HTTP AT ALL\r\n\r\n",  # uvicorn's own answer to bytes that are not HTTP
    }
    for status, data in refusals.items():
        answer = raw_answer(url, data)
        assert answer.startswith(b"HTTP/1.1 " + status), answer
        headers = dict(line.lower().split(b": ", 1) for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:])
        assert b'"error"' in answer  # OpenAI's shape, uvicorn's 400 included
        took = response_time({"x-response-time": headers[b"x-response-time"].decode()})
        if status == b"408":  # timed from the head: the body timeout is in it
            assert took >= 250
