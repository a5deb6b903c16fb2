"""The official anthropic SDK, unchanged, against the gateway's POST /v1/messages: whole messages, streams,
tools, images, errors — served by any provider through the same pipeline as /v1/chat/completions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
import yaml

from gateway.config import parse_config
from gateway.runtime import Gateway
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import record_of
from tests.servers import Upstream, serve

pytestmark = pytest.mark.sdk

PROMPT = "hello gateway world"
ANSWER = "Mock answer: you said hello gateway world"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER: Any = [{"role": "user", "content": PROMPT}]
FAULT_MODELS = {
    "demo-429": "demo-error-429",
    # a deployment of its own: the router may rest one that answered 429
    "demo-429-stream": "demo-stream-error-429",
    "demo-529": "demo-error-529",
    "demo-errorevent": "demo-errorevent-3",
}


@dataclass
class Server:
    url: str
    gateway: Gateway
    upstream: Upstream
    db_path: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One gateway for the module, with the mock provider (demo, fault models) and provider `up`, an
    OpenAI-compatible upstream that records what it receives (model `gpt-4o-mini`)."""
    up = Upstream()
    tmp = tmp_path_factory.mktemp("anthropic")
    models: dict[str, Any] = {
        name: {"deployments": [{"provider": "mock", "model": m}]} for name, m in FAULT_MODELS.items()
    }
    models["gpt-4o-mini"] = {"deployments": [{"provider": "up", "model": "gpt-4o-mini"}]}
    with serve(up.app()) as up_url:
        providers = {"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-upstream"}}
        # no retries: a fault reaches the client at once
        data = merge(base_config(tmp), {"models": models, "providers": providers, "routing": {"retries": 0}})
        config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
        with running(config) as (url, gateway):
            yield Server(url, gateway, up, tmp / "gateway.db")


def sdk(url: str, key: str = KEY, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10, **options)


def async_sdk(url: str, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=10)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in text.split("\n\n"):
        if frame:
            lines = dict(line.split(": ", 1) for line in frame.split("\n"))
            out.append((lines["event"], orjson.loads(lines["data"])))
    return out


# -- whole messages ------------------------------------------------------------------------------------------------


def test_a_whole_message(server: Server) -> None:
    with sdk(server.url) as client:
        raw = client.messages.with_raw_response.create(model="demo", max_tokens=100, messages=USER)
    message = raw.parse()

    assert raw.status_code == 200
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "demo-1"
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(ANSWER.split())
    assert message.usage.input_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    request_id = raw.headers["x-request-id"]
    assert message.id == f"msg_{request_id}"
    assert raw.headers["request-id"] == request_id
    assert raw.headers["x-gateway-provider"] == "mock"


def test_max_tokens_system_and_history_reach_the_upstream_as_a_chat_request(
    server: Server,
) -> None:
    url, up = server.url, server.upstream
    with sdk(url) as client:
        message = client.messages.create(
            model="gpt-4o-mini",
            max_tokens=50,
            system="Be brief.",
            messages=[
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
            ],
            stop_sequences=["END"],
            metadata={"user_id": "user-7"},
            # sampling options older SDKs send as arguments: top_k has no OpenAI equivalent and is dropped
            extra_body={"temperature": 0.5, "top_k": 3},
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there!"
    # the upstream reports 11 prompt tokens of which 5 cached: Anthropic counts them apart
    assert message.usage.input_tokens == 6
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.output_tokens == 3
    sent = up.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-upstream"
    assert sent["body"] == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "two"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
        "stop": ["END"],
        "user": "user-7",
    }


def test_an_image_block_reaches_the_upstream_as_image_url(server: Server) -> None:
    url, up = server.url, server.upstream
    content: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these images?"},
    ]
    with sdk(url) as client:
        client.messages.create(model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": content}])
    assert up.requests[-1]["body"]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is in these images?"},
            ],
        }
    ]


@pytest.mark.anyio
async def test_a_whole_message_with_the_async_client(server: Server) -> None:
    async with async_sdk(server.url) as client:
        message = await client.messages.create(model="demo", max_tokens=100, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == ANSWER


def test_the_key_is_accepted_as_x_api_key_and_as_bearer(server: Server) -> None:
    url = server.url
    body = {"model": "demo", "max_tokens": 10, "messages": USER}
    for headers in (
        {"x-api-key": KEY},
        {"authorization": f"Bearer {KEY}"},
        {"x-api-key": KEY, "authorization": "Bearer bad"},
    ):
        response = httpx.post(f"{url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01", **headers})
        assert response.status_code == 200, (headers, response.text)
        assert response.json()["type"] == "message"


def test_the_request_is_recorded_as_a_chat_completion(server: Server) -> None:
    with sdk(server.url) as client:
        raw = client.messages.with_raw_response.create(model="demo", max_tokens=100, messages=USER)
    record = record_of(server.db_path, raw.headers["x-request-id"])
    assert record["endpoint"] == "chat/completions"
    assert orjson.loads(record["tags"])["api"] == "anthropic"
    assert record["completion_tokens"] == len(ANSWER.split())


# -- streams -------------------------------------------------------------------------------------------------------


def test_a_stream_reassembles_with_the_sdk_helpers(server: Server) -> None:
    with sdk(server.url) as client, client.messages.stream(model="demo", max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER
    assert final.content[0].type == "text"
    assert final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn"
    assert final.model == "demo-1"
    assert final.usage.output_tokens == len(ANSWER.split())
    assert final.usage.input_tokens > 0


@pytest.mark.anyio
async def test_a_stream_with_the_async_client(server: Server) -> None:
    async with (
        async_sdk(server.url) as client,
        client.messages.stream(model="demo", max_tokens=100, messages=USER) as stream,
    ):
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER
    assert final.stop_reason == "end_turn"


def test_the_stream_events_come_in_anthropic_order(server: Server) -> None:
    body = {"model": "demo", "max_tokens": 100, "messages": USER, "stream": True}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    deltas = len(ANSWER.split())
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"] == f"msg_{response.headers['x-request-id']}"
    assert events[-2][1]["usage"]["output_tokens"] == deltas
    assert "[DONE]" not in response.text


def test_an_upstream_stream_without_usage_asked_still_reports_it(server: Server) -> None:
    url, up = server.url, server.upstream
    with sdk(url) as client, client.messages.stream(model="gpt-4o-mini", max_tokens=20, messages=USER) as stream:
        final = stream.get_final_message()
    assert up.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert final.content[0].type == "text"
    assert final.content[0].text == "Hello there!"
    assert final.usage.input_tokens == 6
    assert final.usage.cache_read_input_tokens == 5
    assert final.usage.output_tokens == 3


# -- tools ---------------------------------------------------------------------------------------------------------


def test_a_tool_call_then_a_tool_result_turn(server: Server) -> None:
    with sdk(server.url) as client:
        first = client.messages.create(model="demo", max_tokens=100, messages=USER, tools=[WEATHER_TOOL])
        assert first.stop_reason == "tool_use"
        tool_use = first.content[0]
        assert tool_use.type == "tool_use"
        assert tool_use.name == "get_weather"
        assert tool_use.input == {}

        second = client.messages.create(
            model="demo",
            max_tokens=100,
            tools=[WEATHER_TOOL],
            messages=[
                *USER,
                {"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]},
            ],
        )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text.startswith("Mock answer: you said")


def test_tool_choice_none_gets_text(server: Server) -> None:
    with sdk(server.url) as client:
        message = client.messages.create(
            model="demo", max_tokens=100, messages=USER, tools=[WEATHER_TOOL], tool_choice={"type": "none"}
        )
    assert message.content[0].type == "text"


def test_a_streamed_tool_call(server: Server) -> None:
    with (
        sdk(server.url) as client,
        client.messages.stream(model="demo", max_tokens=100, messages=USER, tools=[WEATHER_TOOL]) as stream,
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["tool_use"]
    assert final.content[0].type == "tool_use"
    assert final.content[0].name == "get_weather"
    assert final.content[0].input == {}


# -- errors --------------------------------------------------------------------------------------------------------


def assert_anthropic_error(exc: anthropic.APIStatusError, status: int, kind: str) -> None:
    assert exc.status_code == status
    body = exc.response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["message"]
    assert body["request_id"] == exc.response.headers["x-request-id"]
    assert "Traceback" not in exc.response.text


def test_no_key_is_an_authentication_error(server: Server) -> None:
    with (
        sdk(server.url, default_headers={"Authorization": anthropic.Omit()}) as client,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        client.messages.create(model="demo", max_tokens=10, messages=USER)
    assert_anthropic_error(caught.value, 401, "authentication_error")
    with sdk(server.url, key="sk-wrong") as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="demo", max_tokens=10, messages=USER)


def test_an_unknown_model_is_not_found(server: Server) -> None:
    with sdk(server.url) as client, pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=10, messages=USER)
    assert_anthropic_error(caught.value, 404, "not_found_error")
    assert "no-such-model" in caught.value.response.json()["error"]["message"]


def test_a_missing_max_tokens_is_a_bad_request(server: Server) -> None:
    with sdk(server.url) as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", cast_to=anthropic.types.Message, body={"model": "demo", "messages": USER})
    assert_anthropic_error(caught.value, 400, "invalid_request_error")
    assert caught.value.response.json()["error"]["message"] == "max_tokens: Field required"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "We could not parse the JSON body"),
        (b"[]", "must be a JSON object"),
        (b'{"model": "demo", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}', "messages.0.role: "),
    ],
)
def test_bad_bodies_are_400_in_anthropic_shape(server: Server, body: bytes, message: str) -> None:
    response = httpx.post(f"{server.url}/v1/messages", content=body, headers={"x-api-key": KEY})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


def test_an_upstream_429_is_a_rate_limit_error_with_retry_after(server: Server) -> None:
    with sdk(server.url) as client, pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="demo-429", max_tokens=10, messages=USER)
    assert_anthropic_error(caught.value, 429, "rate_limit_error")
    assert caught.value.response.headers["retry-after"] == "1"
    # a stream fails the same way, before any event
    with sdk(server.url) as client, pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="demo-429-stream", max_tokens=10, messages=USER, stream=True)


def test_an_upstream_529_is_overloaded(server: Server) -> None:
    with sdk(server.url) as client, pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(model="demo-529", max_tokens=10, messages=USER)
    assert_anthropic_error(caught.value, 529, "overloaded_error")


def test_a_stream_that_fails_midway_ends_with_an_error_event(server: Server) -> None:
    body = {"model": "demo-errorevent", "max_tokens": 100, "messages": USER, "stream": True}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": KEY})
    events = sse_events(response.text)
    assert events[0][0] == "message_start"
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "Mock fault: overloaded."},
            "request_id": response.headers["x-request-id"],
        },
    )
    assert "message_stop" not in [name for name, _ in events]

    with (
        sdk(server.url) as client,
        client.messages.stream(model="demo-errorevent", max_tokens=100, messages=USER) as stream,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        stream.until_done()
    assert "Mock fault: overloaded." in str(caught.value)


def test_the_openai_route_is_unchanged(server: Server) -> None:
    body = {"model": "demo", "messages": USER, "stream": True}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert "event:" not in response.text
    assert '"usage"' not in response.text  # the usage chunk the client did not ask for is still removed
