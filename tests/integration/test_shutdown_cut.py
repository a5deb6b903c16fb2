"""What still runs at the end of the shutdown's drain time is ended by the gateway, never cut in silence: a stream
with an error event (OpenAI's shape and [DONE], or Anthropic's `event: error` on /v1/messages), a whole request with
a 503, each recorded as 503 ServerShuttingDown, its upstream request closed.

The first tests cut in-process (OpenRequests.cut, what the SIGTERM handler calls at drain_timeout_s); the last one
sends SIGTERM to a real `gateway serve` with the official SDKs reading.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.integration.helpers import json_events, sse_payloads, wait_until
from tests.integration.test_auth_first import Reader
from tests.integration.test_client_gone import (
    AUTH,
    CLOSE_DEADLINE_S,
    chat,
    connect,
    probe_overrides,
    records,
    request_bytes,
)
from tests.probe_upstream import ProbeUpstream
from tests.servers import gateway_process

pytestmark = pytest.mark.sdk

WORDS = " ".join(f"w{i}" for i in range(40))  # the mock echoes 32 of them: 36 chunks, 11 s at 300 ms each


@pytest.fixture
def proxied_probe(
    make_config: Callable[..., GatewayConfig],
) -> Iterator[tuple[str, Gateway, ProbeUpstream]]:
    upstream = ProbeUpstream()
    with upstream.serve() as probe_url, running(make_config(**probe_overrides(probe_url))) as (url, gateway):
        yield url, gateway, upstream


def cut_when(gateway: Gateway, count: int) -> None:
    """Once `count` requests are open, end them as the drain deadline does (from the gateway's own loop)."""
    assert wait_until(lambda: len(gateway.open_requests) == count, timeout=5), len(gateway.open_requests)
    watch = next(iter(gateway.open_requests.watches))
    watch.task.get_loop().call_soon_threadsafe(gateway.open_requests.cut)


def assert_cut_by_shutdown(record: dict[str, Any]) -> None:
    assert record["status"] == 503, record
    assert record["error_type"] == "server_shutting_down"
    assert record["error_domain"] == "gateway"


def test_a_stream_cut_ends_with_an_error_event_and_done(proxied_probe, db_path: Path) -> None:
    url, gateway, upstream = proxied_probe
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=orjson.loads(chat("drip", stream=True)),
                      headers=AUTH, timeout=10) as response:  # fmt: skip
        chunks = response.iter_text()
        text = next(chunks)
        assert text.startswith("data: ")  # under way
        cut_when(gateway, 1)
        text += "".join(chunks)
    assert sse_payloads(text)[-1] == "[DONE]"
    error = json_events(text)[-1]["error"]
    assert error["code"] == "server_shutting_down"
    assert error["type"] == "service_unavailable"
    assert set(error) == {"message", "type", "param", "code"}
    (seen,) = upstream.requests
    assert wait_until(lambda: upstream.connection_closed(seen.connection) is not None, timeout=CLOSE_DEADLINE_S)
    assert wait_until(lambda: len(records(db_path)) == 1, timeout=10)
    assert_cut_by_shutdown(records(db_path)[0])


def test_an_anthropic_stream_cut_ends_with_anthropic_error_event(proxied_probe, db_path: Path) -> None:
    url, gateway, _ = proxied_probe
    body = {"model": "drip", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10) as response:
        chunks = response.iter_text()
        first = next(chunks)
        assert "event: message_start" in first
        cut_when(gateway, 1)
        text = first + "".join(chunks)
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\n")
    error = orjson.loads(last.split("data: ", 1)[1])
    assert error["type"] == "error"
    assert error["error"]["type"] == "overloaded_error"  # Anthropic's type for a 503
    assert "shutting down" in error["error"]["message"]
    assert wait_until(lambda: len(records(db_path)) == 1, timeout=10)
    assert_cut_by_shutdown(records(db_path)[0])


@pytest.mark.parametrize(("path", "shape"), [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")])
def test_a_whole_request_cut_gets_a_503_in_its_shape(proxied_probe, db_path: Path, path: str, shape: str) -> None:
    url, gateway, upstream = proxied_probe
    sock = connect(url)
    body = chat("hang", max_tokens=10)
    sock.sendall(request_bytes(path, body, AUTH))
    assert wait_until(lambda: len(upstream.requests) == 1, timeout=5)
    cut_when(gateway, 1)
    status, headers, answer = Reader(sock).response()
    sock.close()
    assert status == 503
    assert headers["connection"] == "close"
    error = orjson.loads(answer)
    if shape == "openai":
        assert error["error"]["code"] == "server_shutting_down"
    else:
        assert error["type"] == "error"
        assert "shutting down" in error["error"]["message"]
    assert wait_until(lambda: upstream.connection_closed(upstream.requests[0].connection) is not None)
    assert wait_until(lambda: len(records(db_path)) == 1, timeout=10)
    assert_cut_by_shutdown(records(db_path)[0])
    assert len(upstream.requests) == 1  # no retry, no fallback after the cut


def test_a_request_whose_body_is_still_coming_is_cut_too(proxied_probe, db_path: Path) -> None:
    url, gateway, upstream = proxied_probe
    sock = connect(url)
    body = chat("ok")
    sock.sendall(request_bytes("/v1/chat/completions", body[:10], AUTH, length=len(body)))
    cut_when(gateway, 1)
    status, headers, _ = Reader(sock).response()
    sock.close()
    assert status == 503
    assert headers["connection"] == "close"  # the rest of the body will not be read
    assert wait_until(lambda: len(records(db_path)) == 1, timeout=10)
    assert_cut_by_shutdown(records(db_path)[0])
    assert upstream.requests == []


def test_the_openai_sdk_raises_api_error_on_a_cut_stream(proxied_probe) -> None:
    url, gateway, _ = proxied_probe
    received: list[Any] = []
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10) as client:
        stream = client.chat.completions.create(model="drip", messages=[{"role": "user", "content": "hi"}], stream=True)
        received.append(next(stream))
        cut_when(gateway, 1)
        with pytest.raises(openai.APIError) as raised:
            received.extend(stream)
    assert "shutting down" in raised.value.message
    assert len(received) >= 1


# -- a real SIGTERM --------------------------------------------------------------------------------------------------


def test_sigterm_cuts_what_outlasts_the_drain_time_in_each_ingress_shape(tmp_path: Path) -> None:
    """Streams on both ingresses (read by the official SDKs and raw) and a whole request outlast a 1 s drain time:
    each ends with its error, the process exits 0, and every record says it was cut by the shutdown."""
    overrides: dict[str, Any] = {
        "server": {"drain_delay_s": 0, "drain_timeout_s": 1},
        "providers": {
            "mocklong": {"type": "mock", "chunk_delay_ms": 300},
            "mockhang": {"type": "mock", "latency_ms": 30_000},
        },
        "models": {"long": {"deployments": [{"provider": "mocklong", "model": "demo-long"}]}},
    }
    outcomes: dict[str, Any] = {}
    started = threading.Barrier(6)
    messages = [{"role": "user", "content": WORDS}]

    def openai_sdk(url: str) -> None:
        with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30) as client:
            stream = client.chat.completions.create(model="long", messages=messages, stream=True)  # type: ignore[arg-type]
            outcomes["openai_sdk_first"] = next(stream)
            started.wait()
            try:
                for _ in stream:
                    pass
            except openai.APIError as exc:
                outcomes["openai_sdk"] = exc

    def anthropic_sdk(url: str) -> None:
        with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=30) as client:
            stream = client.messages.create(model="long", max_tokens=100, messages=messages, stream=True)  # type: ignore[arg-type]
            outcomes["anthropic_sdk_first"] = next(iter(stream))
            started.wait()
            try:
                for _ in stream:
                    pass
            except anthropic.APIError as exc:
                outcomes["anthropic_sdk"] = exc

    def raw(url: str, path: str, name: str, body: dict[str, Any]) -> None:
        with httpx.stream("POST", f"{url}{path}", json=body, headers={"authorization": f"Bearer {KEY}"},
                          timeout=30) as response:  # fmt: skip
            chunks = response.iter_text()
            text = next(chunks)
            started.wait()
            outcomes[name] = text + "".join(chunks)

    def whole(url: str) -> None:
        started.wait()
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "long-whole", "messages": messages},
                              headers={"authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip
        outcomes["whole"] = response

    overrides["models"]["long-whole"] = {"deployments": [{"provider": "mockhang", "model": "demo-late"}]}
    with gateway_process(tmp_path, **overrides) as (url, proc):
        stream_body = {"model": "long", "messages": messages, "stream": True}
        clients = [
            threading.Thread(target=openai_sdk, args=(url,)),
            threading.Thread(target=anthropic_sdk, args=(url,)),
            threading.Thread(target=raw, args=(url, "/v1/chat/completions", "openai_raw", stream_body)),
            threading.Thread(target=raw, args=(url, "/v1/messages", "anthropic_raw", {**stream_body, "max_tokens": 9})),
            threading.Thread(target=whole, args=(url,)),
        ]
        for client in clients:
            client.start()
        started.wait(timeout=20)  # every stream is under way
        assert wait_until(lambda: in_flight(url) == 5, timeout=10)
        proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=20)
        assert proc.wait(timeout=20) == 0
    assert "shutting down" in outcomes["openai_sdk"].message
    assert "shutting down" in str(outcomes["anthropic_sdk"])
    openai_raw = sse_payloads(outcomes["openai_raw"])
    assert openai_raw[-1] == "[DONE]"
    assert orjson.loads(openai_raw[-2])["error"]["code"] == "server_shutting_down"
    assert outcomes["anthropic_raw"].strip().split("\n\n")[-1].startswith("event: error\n")
    assert outcomes["whole"].status_code == 503
    assert outcomes["whole"].json()["error"]["code"] == "server_shutting_down"
    rows = sqlite3.connect(tmp_path / "gateway.db").execute(
        "SELECT model_requested, status, error_type, error_domain FROM model_cost_logs"
    )
    cut = sorted(rows.fetchall())
    assert cut == sorted([("long", 503, "server_shutting_down", "gateway")] * 4 + [("long-whole", 503,
                         "server_shutting_down", "gateway")]), cut  # fmt: skip


def in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("gateway_requests_in_flight "):
            return float(line.split()[1])
    return 0.0
