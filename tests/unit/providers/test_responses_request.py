"""Responses requests become canonical OpenAI chat requests with their input items normalised, and malformed or
untranslatable ones name their field as OpenAI does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.providers.openai.responses import request as request_module
from gateway.providers.openai.responses.answer import to_response
from gateway.providers.openai.responses.request import to_chat_request

RID = "r1"
ITEM = TypeAdapter(ResponseItem)


def translate(history: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    chat, _ = to_chat_request({"model": "demo", "input": "hi", **fields}, history or [], RID)
    return chat


def items(value: Any) -> list[dict[str, Any]]:
    _, normalised = to_chat_request({"model": "demo", "input": value}, [], RID)
    return normalised


# -- the request ---------------------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_and_one_item() -> None:
    chat, normalised = to_chat_request({"model": "demo", "input": "hi"}, [], RID)
    assert chat == {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    assert normalised == [
        {
            "id": "in_r1_0",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "hi"}],
        }
    ]


def test_options_take_their_chat_names() -> None:
    chat = translate(
        instructions="be brief",
        temperature=0.5,
        top_p=1,
        max_output_tokens=100,
        user="u-1",
        reasoning={"effort": "low", "summary": "auto"},
        stream=True,
        store=False,
        metadata={"a": "b"},
        previous_response_id="resp_x",
        include=["reasoning.encrypted_content"],
        truncation="auto",
    )
    assert chat == {
        "model": "demo",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "top_p": 1,
        "max_completion_tokens": 100,
        "user": "u-1",
        "reasoning_effort": "low",
    }


def test_history_goes_between_instructions_and_this_turn() -> None:
    history = [
        *items("first"),
        {
            "id": "msg_r0",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "one", "annotations": [], "logprobs": []}],
        },
    ]
    chat = translate(history, instructions="now", input="second")
    assert chat["messages"] == [
        {"role": "system", "content": "now"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "second"},
    ]


def test_message_items_of_every_role_and_part() -> None:
    value = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "more"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
                {"type": "input_image", "file_id": "file-1"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
            ],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}, {"type": "refusal", "refusal": "!"}]},
    ]
    chat, normalised = to_chat_request({"model": "demo", "input": value}, [], RID)
    assert chat["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "more"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
                {"type": "file", "file": {"file_id": "file-1"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}},
            ],
        },
        {"role": "assistant", "content": "ok!"},
    ]
    assert [item["id"] for item in normalised] == ["in_r1_0", "in_r1_1", "in_r1_2", "in_r1_3"]
    assert normalised[2]["content"][2] == {"type": "input_image", "detail": "auto", "file_id": "file-1"}
    for item in normalised:  # the shapes input_items.list returns
        ITEM.validate_python(item)


def test_function_calls_merge_into_the_assistant_message_and_outputs_become_tool_messages() -> None:
    value = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"city":"Oslo"}', "id": "fc_1"},
        {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "thought"}],
            "encrypted_content": "gAAA",
            "unknown": 1,
        },
        {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [
                {"type": "input_text", "text": "sun"},
                {"type": "input_image", "image_url": "https://x/sun.png"},
            ],
        },
        {"type": "function_call", "call_id": "c3", "name": "get", "arguments": "{}"},
    ]
    chat, normalised = to_chat_request({"model": "demo", "input": value}, [], RID)
    call = {"type": "function", "function": {"name": "get", "arguments": "{}"}}
    assert chat["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city":"Oslo"}'}},
                {"id": "c2", **call},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "sun"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/sun.png", "detail": "auto"}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c3", **call}]},
    ]
    assert normalised[2]["id"] == "fc_1"  # a given id is kept
    assert normalised[4] == {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "thought"}],
        "encrypted_content": "gAAA",
    }
    assert normalised[3]["id"] == "in_r1_3"
    for item in normalised:
        ITEM.validate_python(item)


def test_an_earlier_turns_output_with_tool_calls_is_history_for_the_next() -> None:
    first = items("weather in Oslo?")
    answer = {
        "choices": [
            {
                "message": {
                    "content": "Looking.",
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    output = to_response(
        answer, {"model": "demo", "input": "x"}, request_id=RID, model="demo", created_at=0, usage=None
    )
    history = first + output["output"]
    chat = translate(history, input=[{"type": "function_call_output", "call_id": "call_a", "output": "rain"}])
    assert chat["messages"] == [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
    ]


def test_an_assistant_message_with_input_text_parts_is_output_text() -> None:
    (item,) = items([{"role": "assistant", "content": [{"type": "input_text", "text": "said"}]}])
    assert item["content"] == [{"type": "output_text", "text": "said", "annotations": []}]
    ITEM.validate_python(item)


def test_an_item_reference_brings_the_earlier_item() -> None:
    history = items("first")
    chat, normalised = to_chat_request(
        {"model": "demo", "input": [{"type": "item_reference", "id": "in_r1_0"}]}, history, "r2"
    )
    assert normalised == history
    with pytest.raises(InvalidRequest) as info:
        to_chat_request({"model": "demo", "input": [{"type": "item_reference", "id": "nope"}]}, history, "r2")
    assert info.value.param == "input[0].id"


def test_function_tools_tool_choice_and_parallel_calls() -> None:
    tool = {
        "type": "function",
        "name": "get",
        "description": "weather",
        "parameters": {"type": "object"},
        "strict": True,
    }
    chat = translate(tools=[tool], tool_choice={"type": "function", "name": "get"}, parallel_tool_calls=False)
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "get", "description": "weather", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get"}}
    assert chat["parallel_tool_calls"] is False
    assert translate(tools=[tool], tool_choice="required")["tool_choice"] == "required"
    allowed = translate(tools=[tool], tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [tool]})
    assert allowed["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get"}}]},
    }
    bare = translate(tool_choice="none", parallel_tool_calls=True)  # chat refuses them without tools
    assert "tool_choice" not in bare
    assert "parallel_tool_calls" not in bare


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True, "description": "d"},
            {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object"}, "description": "d", "strict": True},
            },
        ),
    ],
)
def test_text_format_becomes_response_format(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert translate(text={"format": fmt}).get("response_format") == expected


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": None}, "model", "missing_required_parameter"),
        ({"model": ""}, "model", "empty_string"),
        ({"model": 3}, "model", "invalid_type"),
        ({"input": None}, "input", "missing_required_parameter"),
        ({"input": []}, "input", "empty_array"),
        ({"input": 3}, "input", "invalid_type"),
        ({"input": [3]}, "input[0]", "invalid_type"),
        ({"input": [{}]}, "input[0].type", "missing_required_parameter"),
        ({"input": [{"type": "web_search_call"}]}, "input[0].type", "invalid_value"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"input": [{"type": "message", "role": "user"}]}, "input[0].content", "missing_required_parameter"),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "invalid_type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
            "missing_required_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "x"}]}]},
            "input[0].content[0].detail",
            "invalid_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
            "input[0].content[0].file_url",
            "unsupported_value",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c"}]},
            "input[0].output",
            "missing_required_parameter",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "refusal"}]}]},
            "input[0].output[0].type",
            "invalid_value",
        ),
        ({"input": [{"type": "reasoning", "summary": [{"type": "x"}]}]}, "input[0].summary[0].type", "invalid_value"),
        ({"input": [{"type": "reasoning", "summary": [], "content": False}]}, "input[0].content", "invalid_type"),
        ({"temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"top_p": -1}, "top_p", "decimal_below_min_value"),
        ({"max_output_tokens": 8}, "max_output_tokens", "integer_below_min_value"),
        ({"max_output_tokens": 1.5}, "max_output_tokens", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"instructions": 1}, "instructions", "invalid_type"),
        ({"tools": {}}, "tools", "invalid_type"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_value"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
        ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters", "invalid_type"),
        ({"tool_choice": "any"}, "tool_choice", "invalid_value"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice.type", "invalid_value"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name", "missing_required_parameter"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
        ({"reasoning": {"effort": "max"}}, "reasoning.effort", "invalid_value"),
        ({"background": True}, "background", "unsupported_value"),
        ({"conversation": "conv_1"}, "conversation", "unsupported_value"),
        ({"metadata": {"a": 1}}, "metadata.a", "invalid_type"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata", "object_above_max_properties"),
        ({"store": "no"}, "store", "invalid_type"),
        ({"truncation": "middle"}, "truncation", "invalid_value"),
        ({"previous_response_id": 7}, "previous_response_id", "invalid_type"),
    ],
)
def test_malformed_requests_name_the_field(fields: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat_request({"model": "demo", "input": "hi", **fields}, [], RID)
    assert (info.value.param, info.value.code) == (param, code)
    assert info.value.status_code == 400


def test_background_false_and_nulls_are_accepted() -> None:
    assert translate(background=False, temperature=None, tools=None, text=None)["messages"]


# -- any body ------------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
TEXT = st.text(max_size=5)
NAME = st.text(min_size=1, max_size=5)
PART = st.fixed_dictionaries({"type": st.just("input_text"), "text": TEXT}) | st.fixed_dictionaries(
    {"type": st.sampled_from(["input_image", "input_file", "output_text", "refusal"])},
    optional={"image_url": NAME, "file_id": NAME, "detail": st.sampled_from(["auto", "low"]), "text": TEXT},
)
GOOD_ITEM = (
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "developer"]), "content": TEXT | st.lists(PART)},
        optional={"type": st.just("message"), "id": NAME},
    )
    | st.fixed_dictionaries(
        {"type": st.just("function_call"), "call_id": NAME, "name": NAME, "arguments": TEXT},
        optional={"id": NAME},
    )
    | st.fixed_dictionaries(
        {"type": st.just("function_call_output"), "call_id": NAME, "output": TEXT | st.lists(PART, max_size=2)}
    )
    | st.fixed_dictionaries({"type": st.just("reasoning"), "summary": st.just([])}, optional={"id": NAME})
)
ITEM_KEYS = st.sampled_from(["type", "role", "content", "call_id", "name", "arguments", "output", "id", "summary"])
# A good item, now and then with one field replaced by any JSON value.
NOISY_ITEM = st.tuples(GOOD_ITEM, st.just({}) | st.dictionaries(ITEM_KEYS, JSON, max_size=1)).map(
    lambda pair: {**pair[0], **pair[1]}
)
TOOL = st.fixed_dictionaries(
    {"type": st.just("function"), "name": NAME},
    optional={"parameters": st.just({"type": "object"}), "strict": st.booleans(), "description": TEXT},
)
BODY_KEYS = st.sampled_from(
    [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "temperature",
        "top_p",
        "max_output_tokens",
        "stream",
        "metadata",
        "parallel_tool_calls",
        "background",
        "include",
        "user",
        "store",
    ]
)
GOOD_BODY = st.fixed_dictionaries(
    {"model": NAME, "input": TEXT | st.lists(NOISY_ITEM, min_size=1, max_size=5)},
    optional={
        "instructions": TEXT,
        "tools": st.lists(TOOL, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "text": st.sampled_from([{"format": {"type": "json_object"}}, {"format": {"type": "text"}}]),
        "temperature": st.floats(0, 2),
        "max_output_tokens": st.integers(16, 1000),
        "stream": st.booleans(),
    },
)
# A good body, now and then with one field replaced by any JSON value; or any JSON at all.
BODIES = st.tuples(GOOD_BODY, st.just({}) | st.dictionaries(BODY_KEYS, JSON, max_size=1)).map(
    lambda pair: {**pair[0], **pair[1]}
)


@settings(max_examples=400, database=None, deadline=None)
@given(body=BODIES | JSON)
def test_any_json_body_translates_or_is_refused(body: Any) -> None:
    try:
        chat, normalised = to_chat_request(body, [], RID)
    except InvalidRequest:
        return
    assert chat["messages"]
    for item in normalised:
        assert item["id"]
        ITEM.validate_python(item)  # the shapes input_items.list returns
    # and they always make the next turn's history
    assert to_chat_request({"model": "m", "input": "next"}, normalised, "r2")[0]["messages"]


# Where the first property test does not reach: a history that item_reference points into, the object forms of
# tool_choice, text.format json_schema, reasoning, the fields the endpoint reads (metadata, include, truncation,
# store, previous_response_id), function_call_output parts, and any JSON in each of them.
HISTORY_IDS = ["h_msg", "h_call", "h_out", "h_reason"]
HISTORY: list[dict[str, Any]] = [
    {"id": "h_msg", "type": "message", "role": "user", "status": "completed",
     "content": [{"type": "input_text", "text": "earlier"}]},
    {"id": "h_call", "type": "function_call", "status": "completed", "call_id": "c0", "name": "f", "arguments": "{}"},
    {"id": "h_out", "type": "function_call_output", "status": "completed", "call_id": "c0", "output": "42"},
    {"id": "h_reason", "type": "reasoning", "summary": []},
]  # fmt: skip
REFERENCE = st.fixed_dictionaries({"type": st.just("item_reference"), "id": st.sampled_from(HISTORY_IDS) | NAME})
OUTPUT_PARTS = st.lists(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": TEXT})
    | st.fixed_dictionaries({"type": st.just("input_image"), "image_url": NAME}, optional={"detail": JSON})
    | st.fixed_dictionaries({"type": st.just("input_file"), "file_data": NAME}, optional={"filename": JSON}),
    max_size=3,
)
MORE_ITEMS = (
    REFERENCE
    | st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": NAME, "output": OUTPUT_PARTS})
    | st.fixed_dictionaries(
        {"type": st.just("reasoning")},
        optional={"summary": JSON, "content": JSON, "encrypted_content": JSON},
    )
)
TOOL_CHOICE = (
    st.sampled_from(["auto", "none", "required"])
    | st.fixed_dictionaries({"type": st.just("function"), "name": NAME | JSON})
    | st.fixed_dictionaries(
        {"type": st.just("allowed_tools"), "mode": st.sampled_from(["auto", "required"]) | JSON, "tools": JSON}
    )
)
TEXT_FORMAT = st.fixed_dictionaries(
    {"type": st.just("json_schema"), "name": NAME | JSON, "schema": st.just({"type": "object"}) | JSON},
    optional={"strict": JSON, "description": JSON},
)
RICH_BODY = st.fixed_dictionaries(
    {"model": NAME, "input": st.lists(NOISY_ITEM | MORE_ITEMS, min_size=1, max_size=5)},
    optional={
        "tools": st.lists(TOOL, min_size=1, max_size=2),
        "tool_choice": TOOL_CHOICE,
        "text": st.fixed_dictionaries({"format": TEXT_FORMAT}, optional={"verbosity": JSON}),
        "reasoning": st.fixed_dictionaries({}, optional={"effort": st.sampled_from(["low", "high"]) | JSON}),
        "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | JSON, max_size=17),
        "include": st.lists(st.text(max_size=8)) | JSON,
        "truncation": st.sampled_from(["auto", "disabled"]) | JSON,
        "store": JSON,
        "previous_response_id": JSON,
        "parallel_tool_calls": JSON,
    },
)


@settings(max_examples=400, database=None, deadline=None)
@given(body=RICH_BODY)
def test_any_rich_body_with_a_history_translates_or_is_refused(body: dict[str, Any]) -> None:
    try:
        chat, normalised = to_chat_request(body, HISTORY, RID)
    except InvalidRequest:
        return
    assert chat["messages"]
    assert "metadata" not in chat  # kept by the endpoint, never sent upstream
    for item in normalised:
        ITEM.validate_python(item)
    answer = to_response(
        {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]},
        body, request_id=RID, model="m", created_at=0.0, usage=None,
    )  # fmt: skip
    # and this turn, with its answer, makes the next turn's history
    assert to_chat_request({"model": "m", "input": "next"}, HISTORY + normalised + answer["output"], "r2")[0]


def test_metadata_keys_and_values_are_bounded_as_openai_bounds_them() -> None:
    from gateway.errors import InvalidRequest
    from gateway.providers.openai.responses.request import to_chat_request

    for metadata, param in (({"k" * 65: "v"}, "metadata"), ({"k": "v" * 513}, "metadata.k")):
        with pytest.raises(InvalidRequest) as caught:
            to_chat_request({"model": "m", "input": "hi", "metadata": metadata}, [], "r1")
        assert caught.value.param == param
        assert caught.value.code == "string_above_max_length"
    to_chat_request({"model": "m", "input": "hi", "metadata": {"k" * 64: "v" * 512}}, [], "r1")


# -- the plain request's direct translation ------------------------------------------------------------------------

PLAIN_VALUES = {
    "model": st.sampled_from(["demo", "", 3, None]),
    "input": st.sampled_from(["hi", "", ["x"], 1]),
    "instructions": st.sampled_from(["be brief", "", None, 2]),
    "max_output_tokens": st.sampled_from([16, 15, 64, 16.0, True, "64", None]),
    "temperature": st.sampled_from([0, 2, 0.5, 2.5, -1, True, "1", None]),
    "top_p": st.sampled_from([0, 1, 0.3, 1.5, False, None]),
    "store": st.sampled_from([True, False, None, 1]),
    "stream": st.sampled_from([True, False, None, "yes"]),
    "user": st.sampled_from(["u-1", "", None, 5]),
}


def general(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """to_chat_request's result (its chat body's bytes, its items) or its error, by the general path alone."""
    with monkeypatch.context() as patched:
        patched.setattr(request_module, "_plain", lambda body, request_id: None)
        return outcome(body)


def outcome(body: dict[str, Any]) -> Any:
    try:
        chat, normalised = to_chat_request(body, [], RID)
    except InvalidRequest as exc:
        return ("refused", str(exc), exc.param)
    return orjson.dumps(chat), normalised  # bytes: the keys' order is the upstream body's


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=PLAIN_VALUES))
def test_a_plain_request_translates_as_the_general_path_does(body: dict[str, Any]) -> None:
    # _plain answers the bodies it can (a string input, scalar options of their types, within bounds) and leaves
    # every other to the general path: either way the chat body (key for key, in order), the items and the error
    # are the general path's.
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert outcome(body) == general(body, monkeypatch)


def test_a_plain_request_is_translated_directly() -> None:
    body = {"model": "demo", "input": "hi", "instructions": "be brief", "temperature": 0, "max_output_tokens": 64}
    assert request_module._plain(body, RID) is not None
    assert request_module._plain({**body, "temperature": 3}, RID) is None  # the general path's error to say
