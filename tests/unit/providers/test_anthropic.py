"""The Anthropic provider: translations checked on the examples of Anthropic's documentation (tests/fixtures/anthropic),
whole and streamed, with tools and images; then the official openai SDK through the gateway in front of a fake
Anthropic upstream on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import GatewayConfig, ProviderConfig
from gateway.context import Usage
from gateway.providers.anthropic.errors import rejected
from gateway.providers.anthropic.provider import AnthropicProvider
from gateway.providers.anthropic.stream import StreamTranslator
from gateway.providers.anthropic.translate import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    to_anthropic,
    to_openai,
    usage_of,
)
from gateway.providers.base import UnsupportedRequest
from gateway.providers.sse import SSEDecoder
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.servers import serve

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


# -- request ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["request_tool_stream", "request_tool_result", "request_vision"])
def test_documented_requests(name: str) -> None:
    expected = fixture(f"{name}.anthropic.json")
    request = to_anthropic(fixture(f"{name}.openai.json"), expected["model"])
    assert request.body == expected
    assert request.answer_tool is None


def test_consecutive_turns_merge_and_tool_results_share_one_user_turn() -> None:
    calls = [
        {"id": f"toolu_{i}", "type": "function", "function": {"name": "get_weather", "arguments": ""}} for i in (1, 2)
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris"},
        {"role": "user", "content": [{"type": "text", "text": "and in Rome?"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "18 C"}]},
        {"role": "user", "content": "Thanks. Which is warmer?"},
        {"role": "system", "content": "Be brief."},
    ]
    body = to_anthropic({"messages": messages, "tools": [WEATHER_TOOL]}, "claude-3-5-haiku-20241022").body
    assert body["system"] == "Be brief."  # hoisted, wherever it stood
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather in Paris"}, {"type": "text", "text": "and in Rome?"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "18 C"}]},
                {"type": "text", "text": "Thanks. Which is warmer?"},
            ],
        },
    ]


def test_sampling_fields_are_translated_and_unknown_fields_dropped() -> None:
    body = to_anthropic(
        {
            "model": "claude",
            "messages": user("hi"),
            "max_tokens": 50,
            "max_completion_tokens": 100,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": ["END", "  ", "\n"],
            "user": "user-42",
            "seed": 7,
            "logprobs": True,
            "presence_penalty": 0.5,
            "reasoning_effort": "high",
            "metadata": {"tag": "x"},
            "n": 1,
            "stream": False,
        },
        "claude-3-5-haiku-20241022",
    ).body
    assert body == {
        "model": "claude-3-5-haiku-20241022",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,  # max_completion_tokens wins, as it does at OpenAI
        "temperature": 1.0,  # Anthropic's range ends at 1
        "top_p": 0.9,
        "stop_sequences": ["END"],  # Anthropic refuses whitespace-only sequences
        "metadata": {"user_id": "user-42"},
    }


def test_max_tokens_defaults_because_anthropic_requires_it() -> None:
    assert to_anthropic({"messages": user("hi")}, "m").body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert to_anthropic({"messages": user("hi"), "stop": "END"}, "m").body["stop_sequences"] == ["END"]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    request: dict[str, Any] = {"messages": user("hi"), "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    body = to_anthropic(request, "m").body
    assert body.get("tool_choice") == expected
    assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]


def test_tool_choice_is_not_sent_without_tools() -> None:
    assert "tool_choice" not in to_anthropic({"messages": user("hi"), "tool_choice": "auto"}, "m").body


def test_json_schema_becomes_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "city_answer", "schema": schema}}
    request = to_anthropic({"messages": user("Where?"), "response_format": response_format}, "m")
    assert request.answer_tool == "city_answer"
    assert request.body["tools"] == [
        {"name": "city_answer", "description": request.body["tools"][0]["description"], "input_schema": schema}
    ]
    assert request.body["tool_choice"] == {"type": "tool", "name": "city_answer"}

    # With the client's own tools, the model must call one of them or the answer tool.
    with_tools = to_anthropic(
        {"messages": user("Where?"), "response_format": response_format, "tools": [WEATHER_TOOL]}, "m"
    ).body
    assert [t["name"] for t in with_tools["tools"]] == ["get_weather", "city_answer"]
    assert with_tools["tool_choice"] == {"type": "any"}


def test_json_object_becomes_a_system_instruction() -> None:
    messages = [{"role": "system", "content": "You are terse."}, *user("List two colours.")]
    body = to_anthropic({"messages": messages, "response_format": {"type": "json_object"}}, "m").body
    assert body["system"] == f"You are terse.\n{JSON_OBJECT_INSTRUCTION}"
    assert "tools" not in body


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"messages": user("hi"), "n": 2}, "n"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
            "messages[0].content[0].image_url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": user("hi"), "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    ],
)
def test_what_anthropic_cannot_express_is_refused(request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedRequest) as info:
        to_anthropic(request_body, "m")
    assert info.value.param == param


def test_pdf_file_parts_become_documents() -> None:
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
    body = to_anthropic({"messages": [{"role": "user", "content": [part]}]}, "m").body
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
    assert body["messages"] == [{"role": "user", "content": [document]}]


# -- whole answer ----------------------------------------------------------------------------------------------------


def test_documented_text_answer() -> None:
    answer = to_openai(fixture("response_text.json"), None, created=1700000000)
    assert answer == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-20250514",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 2095,
            "completion_tokens": 503,
            "total_tokens": 2598,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    ChatCompletion.model_validate(answer)  # the SDK's own type accepts it


def test_documented_tool_use_answer() -> None:
    answer = to_openai(fixture("response_tool_use.json"), None, created=1)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"].startswith("<thinking>I need to call the get_weather function")
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'},
        }
    ]
    assert "usage" not in answer  # the documented example has none: the gateway counts it instead
    ChatCompletion.model_validate(answer)


def test_the_answer_tool_comes_back_as_json_content() -> None:
    message = {
        "id": "msg_1",
        "model": "claude-3-5-haiku-20241022",
        "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "city_answer", "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    choice = to_openai(message, "city_answer", created=1)["choices"][0]
    assert choice["message"]["content"] == '{"city":"Paris"}'
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    message = {"id": "m", "model": "c", "stop_reason": stop_reason, "content": [{"type": "text", "text": "x"}]}
    assert to_openai(message, None, created=1)["choices"][0]["finish_reason"] == finish


def test_usage_counts_cache_reads_and_writes_in_the_prompt() -> None:
    usage = {
        "input_tokens": 100,
        "cache_read_input_tokens": 2051,
        "cache_creation_input_tokens": 30,
        "output_tokens": 503,
    }
    assert usage_of(usage) == Usage(
        prompt_tokens=2181, completion_tokens=503, cached_tokens=2051, cache_write_tokens=30
    )
    message = {"id": "m", "model": "c", "stop_reason": "end_turn", "content": [], "usage": usage}
    answer = to_openai(message, None, created=1)
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 2051}
    assert answer["choices"][0]["message"]["content"] is None


# -- stream ----------------------------------------------------------------------------------------------------------


def translate_stream(name: str, answer_tool: str | None = None) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    decoder = SSEDecoder()
    payloads = decoder.feed((FIXTURES / name).read_bytes()) + decoder.flush()
    translator = StreamTranslator("claude-deployment", 1700000000, answer_tool)
    return translator, [orjson.loads(chunk) for chunk in translator.feed_all(payloads)]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_documented_text_stream() -> None:
    translator, chunks = translate_stream("stream_text.sse")
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
        assert chunk["model"] == "claude-opus-4-1-20250805"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == "Hello!"
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 15,  # message_delta's count is cumulative: it replaces message_start's
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert translator.done
    assert translator.usage == Usage(prompt_tokens=25, completion_tokens=15)


def test_documented_tool_use_stream() -> None:
    _, chunks = translate_stream("stream_tool_use.sse")
    assert content_of(chunks) == "Okay, let's check the weather for San Francisco, CA:"
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(call) == {"index", "function"} and call["index"] == 0 for call in calls[1:])
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 472
    assert chunks[-1]["usage"]["completion_tokens"] == 89


def test_documented_thinking_stream_shows_only_the_answer() -> None:
    _, chunks = translate_stream("stream_thinking.sse")
    assert content_of(chunks) == "27 * 453 = 12,231"
    assert chunks[-1]["usage"]["total_tokens"] == 0  # the documented example reports no usage


def test_documented_error_event_becomes_an_openai_error_payload() -> None:
    translator, chunks = translate_stream("stream_error.sse")
    assert content_of(chunks[:-1]) == "Hello"
    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}}
    assert translator.failed
    assert not translator.done


def test_the_answer_tool_streams_as_content() -> None:
    events = [
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 9, "output_tokens": 1}},
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "ans", "input": {}},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city"'}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ': "Paris"}'},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    translator = StreamTranslator("c", 1, "ans")
    chunks = [orjson.loads(c) for c in translator.feed_all([orjson.dumps(e) for e in events])]
    assert content_of(chunks) == '{"city": "Paris"}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_usage_keeps_cache_writes_for_the_gateway() -> None:
    start = {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 1}
    events = [
        {"type": "message_start", "message": {"id": "m", "model": "c", "usage": start}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    translator = StreamTranslator("c", 1, None)
    chunks = [orjson.loads(c) for c in translator.feed_all([orjson.dumps(e) for e in events])]
    assert chunks[-1]["usage"]["prompt_tokens"] == 125
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}
    assert translator.usage == Usage(prompt_tokens=125, completion_tokens=9, cached_tokens=100, cache_write_tokens=20)


# -- errors ----------------------------------------------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})


def test_overloaded_529_becomes_a_retryable_503() -> None:
    error = rejected("claude", 529, anthropic_error("overloaded_error", "Overloaded"), "3")
    assert error.status_code == 503
    assert error.retryable
    assert error.headers == {"retry-after": "3"}
    assert error.to_dict() == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}}


@pytest.mark.parametrize(
    ("status", "kind", "message", "expected_type", "code"),
    [
        (
            400,
            "invalid_request_error",
            "prompt is too long: 208656 tokens > 200000 maximum",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            400,
            "invalid_request_error",
            "Output blocked by content filtering policy",
            "invalid_request_error",
            "content_policy_violation",
        ),
        (404, "not_found_error", "model: claude-9", "invalid_request_error", "model_not_found"),
        (
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (401, "authentication_error", "invalid x-api-key", "authentication_error", None),
        (413, "request_too_large", "Request exceeds the maximum size", "invalid_request_error", None),
    ],
)
def test_error_types_and_codes(status: int, kind: str, message: str, expected_type: str, code: str | None) -> None:
    error = rejected("claude", status, anthropic_error(kind, message), None)
    assert error.status_code == status
    assert error.to_dict()["error"] == {
        "message": message,
        "type": expected_type,
        "param": {"context_length_exceeded": "messages", "model_not_found": "model"}.get(code or ""),
        "code": code,
    }


def test_an_error_body_that_is_not_anthropics_json() -> None:
    error = rejected("claude", 502, b"<html>bad gateway</html>", None)
    assert error.status_code == 502
    assert error.message == "The upstream provider 'claude' answered 502."


def test_url_and_headers() -> None:
    default = AnthropicProvider("claude", ProviderConfig(type="anthropic", api_key="sk-ant"))
    assert default.url == "https://api.anthropic.com/v1/messages"
    assert default.headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant",
    }
    custom = AnthropicProvider(
        "claude",
        ProviderConfig(
            type="anthropic",
            base_url="https://proxy.example/v1/",
            api_version="2024-01-01",
            headers={"anthropic-beta": "b1", "x-api-key": "not-this"},
            api_key="sk-ant",
        ),
    )
    assert custom.url == "https://proxy.example/v1/messages"
    assert custom.headers["anthropic-version"] == "2024-01-01"
    assert custom.headers["anthropic-beta"] == "b1"
    assert custom.headers["x-api-key"] == "sk-ant"


# -- end to end: the openai SDK, the gateway, a fake Anthropic -------------------------------------------------------


class FakeAnthropic:
    """Answers /v1/messages with the documented fixtures; the last user message steers it:
    `error-429`, `error-529`, `truncate` (a stream without message_stop); tools get the tool-use answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])

    async def messages(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"headers": dict(request.headers), "body": body})
        last = body["messages"][-1]["content"]
        if last == "error-429":
            return JSONResponse(
                orjson.loads(anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit")),
                status_code=429,
                headers={"retry-after": "7"},
            )
        if last == "error-529":
            return Response(anthropic_error("overloaded_error", "Overloaded"), status_code=529)
        tools = "tools" in body and not isinstance(last, list)  # a list: the tool results came back
        if body.get("stream"):
            sse = (FIXTURES / ("stream_tool_use.sse" if tools else "stream_text.sse")).read_bytes()
            if last == "truncate":
                sse = sse[: sse.index(b"event: message_delta")]
            return Response(sse, media_type="text/event-stream")
        return Response(
            (FIXTURES / ("response_tool_use.json" if tools else "response_text.json")).read_bytes(),
            media_type="application/json",
        )


@pytest.fixture
def claude(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[openai.OpenAI, FakeAnthropic, Gateway]]:
    fake = FakeAnthropic()
    with serve(fake.app()) as fake_url:
        config = make_config(
            providers={"claude": {"type": "anthropic", "base_url": fake_url, "api_key": "sk-ant-test"}},
            models={
                "claude-3-5-haiku": {"deployments": [{"provider": "claude", "model": "claude-3-5-haiku-20241022"}]}
            },
            routing={"retries": 0},  # each upstream error reaches the client as it came, once
        )
        with running(config) as (url, gateway):
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10)
            with client:
                yield client, fake, gateway


@pytest.mark.sdk
def test_sdk_whole_answer(claude: tuple[openai.OpenAI, FakeAnthropic, Gateway]) -> None:
    client, fake, _ = claude
    answer = client.chat.completions.create(
        model="claude-3-5-haiku",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    )
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 2095
    assert answer.usage.completion_tokens == 503
    sent = fake.requests[-1]
    assert sent["body"] == {
        "model": "claude-3-5-haiku-20241022",
        "system": "Be kind.",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    headers = sent["headers"]
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert all(KEY not in value for value in headers.values())


@pytest.mark.sdk
def test_sdk_streamed_answer_is_reassembled(claude: tuple[openai.OpenAI, FakeAnthropic, Gateway]) -> None:
    client, fake, _ = claude
    stream = client.chat.completions.create(
        model="claude-3-5-haiku", messages=user("Hello"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (25, 15)
    assert fake.requests[-1]["body"]["stream"] is True
    assert "stream_options" not in fake.requests[-1]["body"]

    # Without include_usage, the usage chunk is the relay's to strip.
    plain = list(client.chat.completions.create(model="claude-3-5-haiku", messages=user("Hello"), stream=True))
    assert all(c.usage is None for c in plain)


@pytest.mark.sdk
def test_sdk_tool_call_whole_and_streamed(claude: tuple[openai.OpenAI, FakeAnthropic, Gateway]) -> None:
    client, fake, _ = claude
    tools: Any = [WEATHER_TOOL]
    answer = client.chat.completions.create(model="claude-3-5-haiku", messages=user("Weather in SF?"), tools=tools)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}  # type: ignore[union-attr]
    assert fake.requests[-1]["body"]["tools"][0]["name"] == "get_weather"

    # The tool's result goes back as a tool_result block.
    follow_up: Any = [
        *user("Weather in SF?"),
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "15 degrees"},
    ]
    client.chat.completions.create(model="claude-3-5-haiku", messages=follow_up, tools=tools)
    assert fake.requests[-1]["body"]["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}],
    }

    chunks = list(
        client.chat.completions.create(model="claude-3-5-haiku", messages=user("Weather?"), tools=tools, stream=True)
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


@pytest.mark.sdk
def test_sdk_errors(claude: tuple[openai.OpenAI, FakeAnthropic, Gateway]) -> None:
    client, fake, _ = claude
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="claude-3-5-haiku", messages=user("error-429"))
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.body == {
        "message": "Number of requests has exceeded your rate limit",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    with pytest.raises(openai.InternalServerError) as overloaded:
        client.chat.completions.create(model="claude-3-5-haiku", messages=user("error-529"))
    assert overloaded.value.status_code == 503
    assert len(fake.requests) == 2
    # A stream cut before message_stop ends with an error event, never as if it were whole.
    with pytest.raises(openai.APIError, match="message_stop"):
        list(client.chat.completions.create(model="claude-3-5-haiku", messages=user("truncate"), stream=True))
    # Anthropic serves chat only.
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="claude-3-5-haiku", input="hi")
