"""OpenAI answers become Anthropic Messages (content blocks, stop reason, usage); gateway errors become
Anthropic's error JSON with the type its status implies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.context import Usage
from gateway.providers.anthropic.ingress.answer import (
    error_json,
    error_type,
    openai_error_message,
    to_message,
    tool_input,
)

# -- the answer ----------------------------------------------------------------------------------------------------


def answer(message: dict[str, Any], finish: str | None = "stop", **usage: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 5}, **usage},
    }


def test_a_text_answer() -> None:
    message = to_message(answer({"content": "Hello!"}), message_id="msg_1", model="asked", usage=None)
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "served-model",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 4,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
        },
    }


def test_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"type": "function", "function": {"name": "noop", "arguments": ""}},
    ]
    message = to_message(
        answer({"content": "Checking.", "tool_calls": calls}, "tool_calls"), message_id="msg_1", model="m", usage=None
    )
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_msg_1_1", "name": "noop", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_stop_reasons(finish: str | None, stop_reason: str) -> None:
    message = to_message(answer({"content": "x"}, finish), message_id="m", model="m", usage=None)
    assert message["stop_reason"] == stop_reason


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    message = to_message(answer({"content": None, "refusal": "I can't."}), message_id="m", model="m", usage=None)
    assert message["content"] == [{"type": "text", "text": "I can't."}]
    assert message["stop_reason"] == "refusal"


def test_the_gateway_usage_wins_and_an_answer_without_model_reports_the_asked_one() -> None:
    body = answer({"content": "x"})
    del body["model"]
    usage = Usage(prompt_tokens=100, completion_tokens=7, cached_tokens=30, cache_write_tokens=20)
    message = to_message(body, message_id="m", model="asked", usage=usage)
    assert message["model"] == "asked"
    assert message["usage"] == {
        "input_tokens": 50,
        "output_tokens": 7,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 20,
    }


def test_tool_input_keeps_arguments_that_are_not_an_object() -> None:
    assert tool_input('{"a": 1}') == {"a": 1}
    assert tool_input({"a": 1}) == {"a": 1}
    assert tool_input(None) == {}
    assert tool_input("  ") == {}
    assert tool_input('{"a": ') == {"arguments": '{"a": '}
    assert tool_input("[1]") == {"arguments": "[1]"}


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types_follow_the_status(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_error_json_shape() -> None:
    assert orjson.loads(error_json(404, "no such model", "req-1")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
        "request_id": "req-1",
    }
    assert orjson.loads(error_json(502, "down", kind="overloaded_error")) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "down"},
    }


def test_openai_error_message() -> None:
    assert openai_error_message(b'{"error": {"message": "denied", "type": "x"}}') == "denied"
    assert openai_error_message(b'{"error": "plain"}') == "plain"
    assert openai_error_message(b"<html>") == "The request failed."
