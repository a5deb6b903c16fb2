"""Whole chat completions become Response objects that the openai SDK's own model reads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st
from openai.types.responses import Response

from gateway.context import Usage
from gateway.providers.openai.responses.answer import error_json, response_bytes, response_object, to_response
from gateway.store.records import json_bytes

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


# -- response_bytes: the common answer straight to its JSON -------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
_ECHO_KEYS = sorted(
    (
        "instructions", "max_output_tokens", "max_tool_calls", "parallel_tool_calls", "previous_response_id",
        "safety_identifier", "prompt_cache_key", "store", "temperature", "tool_choice", "top_p", "truncation", "user",
        "reasoning", "text", "tools", "metadata", "model", "input", "stream",
    )
)  # fmt: skip
_REQUESTS = st.dictionaries(st.sampled_from(_ECHO_KEYS) | st.text(max_size=4), _JSON, max_size=8)
_MESSAGES = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": st.none() | st.text(max_size=12) | _JSON,
        "refusal": st.none() | st.just("") | st.text(max_size=4) | _JSON,
        "tool_calls": st.none() | st.just([]) | _JSON,
    },
)
_CHATS = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "message": _MESSAGES | _JSON,
                    "finish_reason": st.sampled_from(["stop", "length", "content_filter", None, 3]),
                }
            ),
            max_size=2,
        )
        | _JSON
    },
    optional={
        "model": st.sampled_from(["served", "", None, 7]),
        "usage": st.fixed_dictionaries({"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99)})
        | _JSON,
    },
)
_USAGES = st.none() | st.builds(
    Usage,
    prompt_tokens=st.integers(0, 10**6),
    completion_tokens=st.integers(0, 10**6),
    cached_tokens=st.integers(0, 99),
    reasoning_tokens=st.integers(0, 99),
    cache_write_tokens=st.integers(0, 99),
)


@settings(max_examples=500, database=None, deadline=None)
@given(chat=_CHATS, request=_REQUESTS, request_id=st.text(max_size=6), created=st.floats(0, 2e9), usage=_USAGES)
def test_response_bytes_are_the_general_paths_json(
    chat: dict[str, Any], request: dict[str, Any], request_id: str, created: float, usage: Usage | None
) -> None:
    fast = response_bytes(chat, request, request_id=request_id, model="demo", created_at=created, usage=usage)
    general = json_bytes(
        to_response(chat, request, request_id=request_id, model="demo", created_at=created, usage=usage)
    )
    assert fast is None or fast == general  # byte for byte: the same object, its keys in the same order


def test_response_bytes_take_the_plain_answer() -> None:
    request = {"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 64, "temperature": 0}
    for finish in ("stop", "length"):
        answer = chat({"content": "Hello", "refusal": None}, finish, usage={"prompt_tokens": 3, "completion_tokens": 2})
        fast = response_bytes(answer, request, request_id="r1", model="demo", created_at=1.5, usage=None)
        assert fast is not None
        assert orjson.loads(fast) == respond(answer, request) | {"created_at": 1}
    # What the general path builds from the request or the answer is left to it.
    for odd in ({"metadata": {"a": "b"}}, {"tools": [{"type": "function", "name": "f"}]}, {"reasoning": {}}):
        assert (
            response_bytes(chat({"content": "x"}), request | odd, request_id="r1", model="d", created_at=1, usage=None)
            is None
        )
    for message in ({"content": None, "tool_calls": [{"id": "c", "function": {"name": "f"}}]}, {"refusal": "no"}):
        assert response_bytes(chat(message), request, request_id="r1", model="d", created_at=1, usage=None) is None
    # A text orjson refuses (a lone surrogate, which hypothesis's text never draws) is the general path's to make safe.
    assert (
        response_bytes(chat({"content": "\ud800"}), request, request_id="r1", model="d", created_at=1, usage=None)
        is None
    )
    assert response_bytes(chat({"content": "ok"}), request, request_id='r"1', model="d", created_at=1, usage=None) == (
        json_bytes(to_response(chat({"content": "ok"}), request, request_id='r"1', model="d", created_at=1, usage=None))
    )
