"""Whole chat completions become Response objects that the openai SDK's own model reads."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from gateway.context import Usage
from gateway.providers.openai.responses.answer import error_json, response_object, to_response

REQUEST: dict[str, Any] = {"model": "demo", "input": "hi"}


def chat(message: dict[str, Any], finish: str | None = "stop", **fields: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "demo-2026",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        **fields,
    }


def respond(answer: dict[str, Any], request: dict[str, Any] = REQUEST, usage: Usage | None = None) -> dict[str, Any]:
    out = to_response(answer, request, request_id="r1", model="demo", created_at=1700000000.5, usage=usage)
    Response.model_validate(out)  # the SDK's own model takes it
    return out


def test_a_text_answer() -> None:
    out = respond(chat({"content": "Hello"}), usage=Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=1))
    assert out["id"] == "resp_r1"
    assert out["object"] == "response"
    assert out["created_at"] == 1700000000
    assert out["status"] == "completed"
    assert out["model"] == "demo-2026"  # what served it
    assert out["output"] == [
        {
            "id": "msg_r1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
        }
    ]
    assert out["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    assert Response.model_validate(out).output_text == "Hello"


def test_tool_calls_become_function_call_items() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"city":"Oslo"}'}},
        {"type": "function", "function": {"name": "put", "arguments": "{}"}},
    ]
    out = respond(chat({"content": None, "tool_calls": calls}, "tool_calls"))
    assert out["output"] == [
        {
            "id": "fc_r1_0",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_a",
            "name": "get",
            "arguments": '{"city":"Oslo"}',
        },
        {
            "id": "fc_r1_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_r1_1",  # the upstream gave none
            "name": "put",
            "arguments": "{}",
        },
    ]
    with_text = respond(chat({"content": "Looking.", "tool_calls": calls[:1]}, "tool_calls"))
    assert [item["type"] for item in with_text["output"]] == ["message", "function_call"]


def test_a_refusal_is_a_refusal_part() -> None:
    out = respond(chat({"content": None, "refusal": "No."}))
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_an_answer_cut_short_is_incomplete(finish: str, reason: str) -> None:
    out = respond(chat({"content": "Hel"}, finish))
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": reason}
    assert out["output"][0]["status"] == "incomplete"


def test_an_empty_answer_still_has_its_message_and_the_answers_usage_when_the_gateway_has_none() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    out = respond({"choices": [], "usage": usage})
    assert out["output"][0]["content"] == [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]
    assert out["usage"]["input_tokens"] == 3
    assert out["model"] == "demo"
    assert respond({})["usage"] is None


def test_the_request_settings_are_echoed_in_the_responses_shape() -> None:
    tool = {"type": "function", "name": "get", "parameters": {"type": "object"}, "strict": True}
    request = {
        "model": "demo",
        "input": "hi",
        "instructions": "be brief",
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get"},
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "max_output_tokens": 64,
        "text": {"format": {"type": "json_schema", "name": "o", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "previous_response_id": "resp_0",
        "metadata": {"k": "v"},
        "store": False,
        "truncation": "auto",
        "user": "u",
    }
    out = respond(chat({"content": "{}"}), request)
    assert out["instructions"] == "be brief"
    assert out["tools"] == [{"description": None, **tool}]
    assert out["tool_choice"] == {"type": "function", "name": "get"}
    assert out["parallel_tool_calls"] is False
    assert (out["temperature"], out["top_p"], out["max_output_tokens"]) == (0.2, 1.0, 64)
    assert out["text"]["format"]["type"] == "json_schema"
    assert out["reasoning"] == {"effort": "low", "summary": None}
    assert (out["previous_response_id"], out["metadata"], out["store"]) == ("resp_0", {"k": "v"}, False)
    assert (out["truncation"], out["user"]) == ("auto", "u")
    defaults = respond(chat({"content": "x"}))
    assert (defaults["tool_choice"], defaults["tools"], defaults["store"]) == ("auto", [], True)
    assert defaults["text"] == {"format": {"type": "text"}, "verbosity": "medium"}


@pytest.mark.parametrize(
    ("status", "code"), [(429, "rate_limit_exceeded"), (400, "invalid_prompt"), (502, "server_error")]
)
def test_a_failed_response_carries_an_error_the_sdk_knows(status: int, code: str) -> None:
    error = error_json(status, "boom")
    assert error == {"code": code, "message": "boom"}
    failed = response_object(
        REQUEST,
        response_id="resp_r1",
        model="demo",
        created_at=1.0,
        status="failed",
        output=[],
        usage=None,
        error=error,
    )
    parsed = Response.model_validate(failed)
    assert parsed.error is not None
    assert parsed.error.code == code
