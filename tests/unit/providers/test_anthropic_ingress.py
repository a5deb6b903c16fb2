"""Anthropic Messages requests become canonical OpenAI chat requests, and malformed ones name their field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.providers.anthropic.ingress.request import to_chat_request

PNG = "iVBORw0KGgo="


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields}


# -- the request ---------------------------------------------------------------------------------------------------


def test_a_minimal_request_keeps_model_and_max_tokens() -> None:
    assert to_chat_request(request()) == {
        "model": "demo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
    }


def test_system_string_and_text_blocks_become_one_system_message() -> None:
    assert to_chat_request(request(system="be brief"))["messages"][0] == {"role": "system", "content": "be brief"}
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]
    assert to_chat_request(request(system=blocks))["messages"][0] == {"role": "system", "content": "one\ntwo"}
    assert to_chat_request(request(system=""))["messages"][0]["role"] == "user"


def test_sampling_options_stop_sequences_and_user() -> None:
    chat = to_chat_request(
        request(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END"], metadata={"user_id": "u-1"})
    )
    assert chat["temperature"] == 0.2
    assert chat["top_p"] == 0.9
    assert "top_k" not in chat  # no OpenAI equivalent
    assert chat["stop"] == ["END"]
    assert chat["user"] == "u-1"


def test_structured_output_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    chat = to_chat_request(
        request(output_config={"effort": "high", "format": {"type": "json_schema", "schema": schema}})
    )
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert "response_format" not in to_chat_request(request(output_config={"effort": "low"}))


def test_max_tokens_zero_is_left_to_the_upstream() -> None:
    assert to_chat_request(request(max_tokens=0))["max_tokens"] == 0


def test_edge_values_anthropic_accepts_pass() -> None:
    chat = to_chat_request(request(max_tokens=64.0, temperature=1, top_p=0, top_k=0, metadata={"user_id": None}))
    assert chat["max_tokens"] == 64
    assert type(chat["max_tokens"]) is int  # as Anthropic reads 64.0
    assert (chat["temperature"], chat["top_p"]) == (1, 0)
    assert "user" not in chat
    assert to_chat_request(request(thinking={"type": "enabled", "budget_tokens": 1024}))["model"] == "demo"


def test_a_stream_always_asks_the_upstream_for_usage() -> None:
    chat = to_chat_request(request(stream=True))
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
    assert "stream" not in to_chat_request(request(stream=False))


def test_user_blocks_text_and_images() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    chat = to_chat_request(request(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_a_lone_text_block_becomes_a_plain_string() -> None:
    chat = to_chat_request(request(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]))
    assert chat["messages"] == [{"role": "user", "content": "hi"}]


def test_documents_become_text_or_file_parts() -> None:
    content = [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the doc"}},
        {
            "type": "document",
            "title": "a.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]
    parts = to_chat_request(request(messages=[{"role": "user", "content": content}]))["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "the doc"},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
    ]


def test_tool_use_and_tool_result_turns() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no data"}],
                    "is_error": True,
                },
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    chat = to_chat_request(request(messages=messages))
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
        {"role": "user", "content": "and tomorrow?"},
    ]


def test_an_assistant_turn_of_tool_calls_only_has_null_content() -> None:
    turn = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    message = to_chat_request(request(messages=[{"role": "user", "content": "go"}, turn]))["messages"][1]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


def test_images_in_a_tool_result_follow_in_a_user_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "abc"}}
    content = [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "shot:"}, image]}]
    chat = to_chat_request(request(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "shot:"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,abc"}}]},
    ]


def test_tools_become_functions() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [
        {"name": "get_weather", "description": "The weather.", "input_schema": schema},
        {"name": "noop", "input_schema": {"type": "object"}},
    ]
    chat = to_chat_request(request(tools=tools))
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "The weather.", "parameters": schema}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "noop"}, {"type": "function", "function": {"name": "noop"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    chat = to_chat_request(request(tools=[{"name": "noop", "input_schema": {}}], tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_and_tool_choice_without_tools() -> None:
    tools = [{"name": "noop", "input_schema": {}}]
    chat = to_chat_request(request(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert chat["parallel_tool_calls"] is False
    # OpenAI rejects tool_choice without tools: it is left out.
    assert "tool_choice" not in to_chat_request(request(tool_choice={"type": "auto"}))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "demo", "max_tokens": 5}, "messages"),
        (request(max_tokens=-1), "max_tokens"),
        (request(max_tokens=True), "max_tokens"),
        (request(messages=[]), "messages"),
        (request(messages="hi"), "messages"),
        (request(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
        (request(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (request(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages.0.content.0.type"),
        (request(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text"),
        (
            request(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]),
            "messages.0.content.0.source",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "tool_result"}]}]),
            "messages.0.content.0.tool_use_id",
        ),
        (request(messages=[{"role": "user", "content": [{"type": "audio"}]}]), "messages.0.content.0.type"),
        (
            request(
                messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": 1}]}]
            ),
            "messages.0.content.0.input",
        ),
        (request(temperature="hot"), "temperature"),
        (request(stream="yes"), "stream"),
        (request(stop_sequences="END"), "stop_sequences"),
        (request(system=5), "system"),
        (request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
        (request(tools=[{"name": "f"}]), "tools.0.input_schema"),
        (request(tool_choice={"type": "tool"}), "tool_choice.name"),
        (request(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (request(metadata="u"), "metadata"),
        (request(output_config={"format": {"type": "text"}}), "output_config.format"),
        (request(max_tokens=1.5), "max_tokens"),
        (request(max_tokens=1e300), "max_tokens"),  # integral, but no JSON encoder takes it as an int
        (request(temperature=1.5), "temperature"),  # Anthropic's temperature is 0..1 (OpenAI's goes to 2)
        (request(temperature=-0.1), "temperature"),
        (request(top_p=2), "top_p"),
        (request(top_k=-1), "top_k"),
        (request(top_k="5"), "top_k"),
        (request(metadata={"user_id": 5}), "metadata.user_id"),
        (request(thinking="on"), "thinking"),
    ],
)
def test_malformed_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat_request(body)
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}: ")
    assert caught.value.status_code == 400
