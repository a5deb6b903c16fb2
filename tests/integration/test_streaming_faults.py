"""Streams that go wrong: a client that leaves cancels the upstream; a stalled, broken or failing upstream ends the
client's stream with an error event in OpenAI's shape and `[DONE]`, never a hang; each is recorded as an error."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from gateway.config import GatewayConfig
from gateway.providers.mock import MockProvider
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.integration.conftest import upstream_overrides
from tests.integration.helpers import (
    RawUpstream,
    async_sdk_client,
    json_events,
    record_of,
    sdk_client,
    sse_payloads,
    user,
    wait_until,
)

pytestmark = pytest.mark.sdk

AUTH = {"authorization": f"Bearer {KEY}"}
LONG_PROMPT = " ".join(f"word{i}" for i in range(30))  # ~35 chunks: about a second on `mockslow`
FAULT_MODELS = {
    "stall": ("mock", "demo-stall-3"),
    "reset": ("mock", "demo-reset-3"),
    "errorevent": ("mock", "demo-errorevent-2"),
    "slow-stall": ("mockslow", "demo-stall-2"),
}


@pytest.fixture
def faulty(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[str, Gateway]]:
    models = {name: {"deployments": [{"provider": p, "model": m}]} for name, (p, m) in FAULT_MODELS.items()}
    with running(make_config(models=models, routing={"timeouts": {"idle_s": 0.3}})) as server:
        yield server


def stream_body(model: str, prompt: str = "hi there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": user(prompt), "stream": True, **extra}


def read_stream(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[httpx.Response, str]:
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=5)
    return response, response.text


def read_some_then_leave(url: str, body: dict[str, Any], events: int = 2) -> list[str]:
    """Read a few SSE events, then close the connection."""
    seen: list[str] = []
    with (
        httpx.Client(timeout=5) as http,
        http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(line)
            if len(seen) == events:
                break
    return seen


def take_until_error(stream: Iterator[Any], into: list[Any]) -> None:
    """Append each chunk to `into` as it arrives, so that what came before an exception is kept."""
    for chunk in stream:
        into.append(chunk)


async def atake_until_error(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


# -- the client leaves ----------------------------------------------------------------------------------------------


def test_disconnect_cancels_the_upstream_request(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    body = stream_body("stream-delay-20")
    seen = read_some_then_leave(url, body, events=3)
    assert len(seen) == 3

    # The upstream would take 4 s to finish; its request is closed at once instead.
    assert wait_until(lambda: up.cancelled_streams == 1), (up.cancelled_streams, up.finished_streams)
    assert up.finished_streams == 0
    (request,) = up.requests
    assert request["body"]["stream"] is True


def test_disconnect_is_recorded_as_499(proxied: tuple[str, Gateway, RawUpstream], db_path: Path) -> None:
    url, _, up = proxied
    with (
        httpx.Client(timeout=5) as http,
        http.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=stream_body("stream-delay-20"),
            headers={**AUTH, "x-request-id": "leaver-1"},
        ) as response,
    ):
        next(response.iter_lines())
    record = record_of(db_path, "leaver-1")
    assert record["status"] == 499
    assert record["stream"] == 1
    assert wait_until(lambda: up.cancelled_streams == 1)


def test_sdk_stream_closed_early_cancels_the_upstream(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        stream = client.chat.completions.create(model="stream-delay-20", messages=user("hi"), stream=True)
        first = [next(stream), next(stream)]
        stream.close()
    assert first[1].choices[0].delta.content == "Hel"
    assert wait_until(lambda: up.cancelled_streams == 1), (up.cancelled_streams, up.finished_streams)
    assert up.finished_streams == 0


@pytest.mark.anyio
async def test_async_sdk_stream_closed_early_cancels_the_upstream(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    async with async_sdk_client(url) as client:
        stream = await client.chat.completions.create(model="stream-delay-20", messages=user("hi"), stream=True)
        count = 0
        async for _ in stream:
            count += 1
            if count == 2:
                break
        await stream.close()
    assert await anyio.to_thread.run_sync(wait_until, lambda: up.cancelled_streams == 1)
    assert up.finished_streams == 0


def test_disconnect_cancels_a_mock_stream(gateway_server: tuple[str, Gateway]) -> None:
    url, gateway = gateway_server
    mock = gateway.providers["mockslow"]
    assert isinstance(mock, MockProvider)
    seen = read_some_then_leave(url, stream_body("slow-stream", LONG_PROMPT), events=2)
    assert len(seen) == 2
    assert wait_until(lambda: mock.cancelled_streams == 1)  # cancelled, not finished: it had not ended by itself


def test_mock_stream_read_to_the_end_is_not_counted_as_cancelled(gateway_server: tuple[str, Gateway]) -> None:
    url, gateway = gateway_server
    mock = gateway.providers["mock"]
    assert isinstance(mock, MockProvider)
    response, text = read_stream(url, stream_body("demo"))
    assert response.status_code == 200
    assert sse_payloads(text)[-1] == "[DONE]"
    assert wait_until(lambda: mock.cancelled_streams > 0, timeout=0.2) is False


# -- the upstream fails mid-stream ----------------------------------------------------------------------------------


def test_stalled_stream_ends_with_error_event_and_done(faulty: tuple[str, Gateway], db_path: Path) -> None:
    url, _ = faulty
    started = time.monotonic()
    response, text = read_stream(url, stream_body("stall"), {"x-request-id": "stall-1"})
    took = time.monotonic() - started

    assert response.status_code == 200
    assert took >= 0.3  # the idle timeout; the stall itself never ends
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == 1
    events = json_events(text)
    assert len(events) == 4  # the three chunks before the stall, then the error
    assert all("choices" in e for e in events[:3])
    error = events[-1]
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == "stream_idle_timeout"
    assert error["error"]["type"] == "timeout_error"

    record = record_of(db_path, "stall-1")
    assert record["error_type"] == "stream_idle_timeout"  # the code of the error event
    assert record["error_domain"] == "provider"


def test_sdk_raises_api_error_on_a_stalled_stream(faulty: tuple[str, Gateway]) -> None:
    url, _ = faulty
    received: list[Any] = []
    with sdk_client(url) as client:
        stream = client.chat.completions.create(model="slow-stall", messages=user("hi"), stream=True)
        with pytest.raises(openai.APIError) as caught:
            take_until_error(stream, received)
    assert len(received) == 2
    assert not isinstance(caught.value, openai.APIStatusError)  # it came inside a 200 stream
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "stream_idle_timeout"
    assert "0.3" in caught.value.message


@pytest.mark.anyio
async def test_async_sdk_raises_api_error_on_a_reset_stream(faulty: tuple[str, Gateway]) -> None:
    url, _ = faulty
    received: list[Any] = []
    async with async_sdk_client(url) as client:
        stream = await client.chat.completions.create(model="reset", messages=user("hi"), stream=True)
        with pytest.raises(openai.APIError) as caught:
            await atake_until_error(stream, received)
    assert len(received) == 3
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "upstream_unavailable"


def test_reset_stream_ends_with_error_event_and_done(faulty: tuple[str, Gateway], db_path: Path) -> None:
    url, _ = faulty
    response, text = read_stream(url, stream_body("reset"), {"x-request-id": "reset-1"})
    assert response.status_code == 200
    assert sse_payloads(text)[-1] == "[DONE]"
    events = json_events(text)
    assert len(events) == 4
    assert events[-1]["error"]["code"] == "upstream_unavailable"
    assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in text
    assert record_of(db_path, "reset-1")["error_type"] == "upstream_unavailable"


def test_error_event_inside_a_200_stream_is_forwarded_and_recorded(faulty: tuple[str, Gateway], db_path: Path) -> None:
    url, _ = faulty
    response, text = read_stream(url, stream_body("errorevent"), {"x-request-id": "errorevent-1"})
    assert response.status_code == 200
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    events = json_events(text)
    assert len(events) == 3
    assert events[-1] == {"error": {"message": "Mock fault: overloaded.", "type": "server_error"}}  # as it came

    record = record_of(db_path, "errorevent-1")
    assert record["error_type"] == "upstream_rejected"
    assert record["error_domain"] == "provider"
    assert record["stream"] == 1

    with sdk_client(url) as client, pytest.raises(openai.APIError, match="Mock fault: overloaded."):
        list(client.chat.completions.create(model="errorevent", messages=user("hi"), stream=True))


def test_healthy_stream_is_recorded_without_error(gateway_server: tuple[str, Gateway], db_path: Path) -> None:
    url, _ = gateway_server
    response, text = read_stream(url, stream_body("demo"), {"x-request-id": "fine-1"})
    assert sse_payloads(text)[-1] == "[DONE]"
    record = record_of(db_path, "fine-1")
    assert record["error_type"] == ""
    assert record["status"] == 200
    assert record["completion_tokens"] == len(events := json_events(text)) - 2  # role chunk and finish chunk
    assert all("usage" not in e for e in events)


def test_upstream_idle_timeout_closes_the_upstream_request(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream], db_path: Path
) -> None:
    up_url, up = raw_upstream
    config = make_config(**upstream_overrides(up_url), routing={"timeouts": {"idle_s": 0.005}})
    with running(config) as (url, _):
        response, text = read_stream(url, stream_body("stream-delay-20"), {"x-request-id": "idle-1"})
    assert json_events(text)[-1]["error"]["code"] == "stream_idle_timeout"
    assert sse_payloads(text)[-1] == "[DONE]"
    assert wait_until(lambda: up.cancelled_streams == 1)
    assert up.finished_streams == 0


def test_a_bug_mid_stream_still_ends_with_error_event_and_done(
    gateway_server: tuple[str, Gateway], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, gateway = gateway_server
    mock = gateway.providers["mock"]
    healthy = mock._stream  # type: ignore[attr-defined]

    async def broken(*args: Any) -> AsyncIterator[bytes]:
        async for index, payload in anyio_enumerate(healthy(*args)):
            if index == 2:
                raise RuntimeError("secret internal detail")
            yield payload

    monkeypatch.setattr(mock, "_stream", broken)
    response, text = read_stream(url, stream_body("demo"), {"x-request-id": "bug-stream-1"})
    record = record_of(db_path, "bug-stream-1")
    assert record["error_type"] == "internal_error"
    assert "secret" not in text
    assert sse_payloads(text)[-1] == "[DONE]"
    assert json_events(text)[-1]["error"]["code"] == "internal_error"


async def anyio_enumerate(stream: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    index = 0
    async for item in stream:
        yield index, item
        index += 1
