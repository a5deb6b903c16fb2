"""The request validator: each invalid parameter is a 400 naming its field and OpenAI's code; every edge value
OpenAI accepts passes, so that drop-in clients are never refused what OpenAI would serve."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.api.validation import validate
from gateway.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}
BASE: dict[str, dict[str, Any]] = {
    "chat/completions": {"model": "gpt-4o", "messages": [USER]},
    "completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "embeddings": {"model": "text-embedding-3-small", "input": "hi"},
}
DROP = object()  # an override that removes the field


def body_with(endpoint: str, **overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE[endpoint])
    for name, value in overrides.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def chat(*messages: Any, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("messages", list(messages) or [USER])
    return body_with("chat/completions", **overrides)


def refusal(endpoint: str, body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(endpoint, body)
    return caught.value


C = "chat/completions"
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

# (endpoint, body, param, code)
INVALID: dict[str, tuple[str, dict[str, Any], str, str]] = {
    # required
    "no model": (C, chat(model=DROP), "model", "missing_required_parameter"),
    "null messages": (C, chat(messages=None), "messages", "missing_required_parameter"),
    "no prompt": ("completions", body_with("completions", prompt=DROP), "prompt", "missing_required_parameter"),
    "no input": ("embeddings", body_with("embeddings", input=DROP), "input", "missing_required_parameter"),
    # the instances
    "max_tokens -5": (C, chat(max_tokens=-5), "max_tokens", "integer_below_min_value"),
    "n 100000000": (C, chat(n=100_000_000), "n", "integer_above_max_value"),
    "content 12": (C, chat({"role": "user", "content": 12}), "messages[0].content", "invalid_type"),
    "part type a list": (
        C, chat({"role": "user", "content": [{"type": ["text"], "text": "x"}]}), "messages[0].content[0].type",
        "invalid_type",
    ),
    # scalar types and ranges
    "model a number": (C, chat(model=4), "model", "invalid_type"),
    "max_tokens 0": (C, chat(max_tokens=0), "max_tokens", "integer_below_min_value"),
    "max_tokens a bool": (C, chat(max_tokens=True), "max_tokens", "invalid_type"),
    "max_tokens 1.5": (C, chat(max_tokens=1.5), "max_tokens", "invalid_type"),
    "max_tokens a string": (C, chat(max_tokens="5"), "max_tokens", "invalid_type"),
    "max_completion_tokens 0": (C, chat(max_completion_tokens=0), "max_completion_tokens", "integer_below_min_value"),
    "n 0": (C, chat(n=0), "n", "integer_below_min_value"),
    "n 129": (C, chat(n=129), "n", "integer_above_max_value"),
    "temperature 2.01": (C, chat(temperature=2.01), "temperature", "decimal_above_max_value"),
    "temperature -0.1": (C, chat(temperature=-0.1), "temperature", "decimal_below_min_value"),
    "temperature a string": (C, chat(temperature="hot"), "temperature", "invalid_type"),
    "top_p 1.5": (C, chat(top_p=1.5), "top_p", "decimal_above_max_value"),
    "presence_penalty 3": (C, chat(presence_penalty=3), "presence_penalty", "decimal_above_max_value"),
    "frequency_penalty -2.5": (C, chat(frequency_penalty=-2.5), "frequency_penalty", "decimal_below_min_value"),
    "seed beyond int64": (C, chat(seed=2**63), "seed", "integer_above_max_value"),
    "seed a decimal": (C, chat(seed=0.5), "seed", "invalid_type"),
    "stream a string": (C, chat(stream="yes"), "stream", "invalid_type"),
    "stream_options a list": (C, chat(stream=True, stream_options=[]), "stream_options", "invalid_type"),
    "include_usage a string": (
        C, chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage", "invalid_type",
    ),
    "stream_options without stream": (C, chat(stream_options={"include_usage": True}), "stream_options",
                                      "invalid_value"),
    "user a number": (C, chat(user=5), "user", "invalid_type"),
    "stop a number": (C, chat(stop=5), "stop", "invalid_type"),
    "stop of five": (C, chat(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    "stop with a number": (C, chat(stop=["a", 1]), "stop[1]", "invalid_type"),
    "logit_bias a list": (C, chat(logit_bias=[1]), "logit_bias", "invalid_type"),
    "logit_bias 101": (C, chat(logit_bias={"50256": 101}), "logit_bias.50256", "decimal_above_max_value"),
    "logit_bias a string": (C, chat(logit_bias={"50256": "x"}), "logit_bias.50256", "invalid_type"),
    "logprobs an int": (C, chat(logprobs=1), "logprobs", "invalid_type"),
    "top_logprobs 21": (C, chat(logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    "metadata a list": (C, chat(metadata=["a"]), "metadata", "invalid_type"),
    "metadata of a number": (C, chat(metadata={"a": 1}), "metadata.a", "invalid_type"),
    "parallel_tool_calls a string": (C, chat(parallel_tool_calls="no"), "parallel_tool_calls", "invalid_type"),
    # messages
    "messages a string": (C, chat(messages="hi"), "messages", "invalid_type"),
    "messages empty": (C, chat(messages=[]), "messages", "empty_array"),
    "message a string": (C, chat("hi"), "messages[0]", "invalid_type"),
    "no role": (C, chat({"content": "hi"}), "messages[0].role", "missing_required_parameter"),
    "role a list": (C, chat({"role": ["user"], "content": "hi"}), "messages[0].role", "invalid_type"),
    "unknown role": (C, chat({"role": "wizard", "content": "hi"}), "messages[0].role", "invalid_value"),
    "no content": (C, chat(USER, {"role": "user"}), "messages[1].content", "missing_required_parameter"),
    "null user content": (C, chat({"role": "user", "content": None}), "messages[0].content", "invalid_type"),
    "content an object": (C, chat({"role": "system", "content": {"text": "x"}}), "messages[0].content",
                          "invalid_type"),
    "bare assistant": (C, chat({"role": "assistant", "content": None}), "messages[0].content", "invalid_type"),
    "name a number": (C, chat({"role": "user", "content": "x", "name": 1}), "messages[0].name", "invalid_type"),
    "tool without id": (C, chat({"role": "tool", "content": "42"}), "messages[0].tool_call_id",
                        "missing_required_parameter"),
    "tool id a number": (C, chat({"role": "tool", "content": "42", "tool_call_id": 1}), "messages[0].tool_call_id",
                         "invalid_type"),
    "function without name": (C, chat({"role": "function", "content": "x"}), "messages[0].name",
                              "missing_required_parameter"),
    "tool_calls an object": (C, chat({"role": "assistant", "tool_calls": {}}), "messages[0].tool_calls",
                             "invalid_type"),
    "tool call without id": (
        C, chat({"role": "assistant", "tool_calls": [{**TOOL_CALL, "id": None}]}), "messages[0].tool_calls[0].id",
        "missing_required_parameter",
    ),
    "tool call arguments an object": (
        C, chat({"role": "assistant", "tool_calls": [{**TOOL_CALL, "function": {"name": "f", "arguments": {}}}]}),
        "messages[0].tool_calls[0].function.arguments", "invalid_type",
    ),
    "tool call of an unknown type": (
        C, chat({"role": "assistant", "tool_calls": [{**TOOL_CALL, "type": "magic"}]}),
        "messages[0].tool_calls[0].type", "invalid_value",
    ),
    # content parts
    "part a string": (C, chat({"role": "user", "content": ["hi"]}), "messages[0].content[0]", "invalid_type"),
    "part without type": (C, chat({"role": "user", "content": [{"text": "x"}]}), "messages[0].content[0].type",
                          "missing_required_parameter"),
    "part of a type that is a list": (
        C, chat({"role": "user", "content": [{"type": ["text"], "text": "x"}]}), "messages[0].content[0].type",
        "invalid_type",
    ),
    "text part without text": (
        C, chat({"role": "user", "content": [{"type": "text"}]}), "messages[0].content[0].text",
        "missing_required_parameter",
    ),
    "text part of a list": (
        C, chat(USER, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ["b"]}]}),
        "messages[1].content[1].text", "invalid_type",
    ),
    "image_url a string": (
        C, chat({"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}),
        "messages[0].content[0].image_url", "invalid_type",
    ),
    "image url a number": (
        C, chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}),
        "messages[0].content[0].image_url.url", "invalid_type",
    ),
    "audio without format": (
        C, chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]}),
        "messages[0].content[0].input_audio.format", "missing_required_parameter",
    ),
    "file a string": (
        C, chat({"role": "user", "content": [{"type": "file", "file": "file-1"}]}), "messages[0].content[0].file",
        "invalid_type",
    ),
    "refusal a number": (
        C, chat({"role": "assistant", "content": [{"type": "refusal", "refusal": 1}]}),
        "messages[0].content[0].refusal", "invalid_type",
    ),
    # tools, tool_choice, response_format
    "tools an object": (C, chat(tools={}), "tools", "invalid_type"),
    "tool without function": (C, chat(tools=[{"type": "function"}]), "tools[0].function",
                              "missing_required_parameter"),
    "tool name a list": (C, chat(tools=[{"type": "function", "function": {"name": ["f"]}}]), "tools[0].function.name",
                         "invalid_type"),
    "tool parameters a string": (
        C, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters", "invalid_type",
    ),
    "tool of a type that is a number": (C, chat(tools=[{"type": 3}]), "tools[0].type", "invalid_type"),
    "129 tools": (C, chat(tools=[{"type": "function", "function": {"name": "f"}}] * 129), "tools",
                  "array_above_max_length"),
    "tool_choice unknown": (C, chat(tool_choice="sometimes"), "tool_choice", "invalid_value"),
    "tool_choice a number": (C, chat(tool_choice=1), "tool_choice", "invalid_type"),
    "tool_choice without a name": (C, chat(tool_choice={"type": "function", "function": {}}),
                                   "tool_choice.function.name", "missing_required_parameter"),
    "functions an object": (C, chat(functions={"name": "f"}), "functions", "invalid_type"),
    "function_call unknown": (C, chat(function_call="always"), "function_call", "invalid_value"),
    "response_format a string": (C, chat(response_format="json"), "response_format", "invalid_type"),
    "response_format unknown": (C, chat(response_format={"type": "xml"}), "response_format.type", "invalid_value"),
    "json_schema missing": (C, chat(response_format={"type": "json_schema"}), "response_format.json_schema",
                            "missing_required_parameter"),
    "json_schema without name": (
        C, chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name", "missing_required_parameter",
    ),
    "json_schema schema a list": (
        C, chat(response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": []}}),
        "response_format.json_schema.schema", "invalid_type",
    ),
    # completions
    "prompt a number": ("completions", body_with("completions", prompt=7), "prompt", "invalid_type"),
    "prompt mixed": ("completions", body_with("completions", prompt=["a", 1]), "prompt[1]", "invalid_type"),
    "prompt tokens mixed": ("completions", body_with("completions", prompt=[1, "a"]), "prompt[1]", "invalid_type"),
    "prompt of objects": ("completions", body_with("completions", prompt=[{"a": 1}]), "prompt[0]", "invalid_type"),
    "completions max_tokens -1": ("completions", body_with("completions", max_tokens=-1), "max_tokens",
                                  "integer_below_min_value"),
    "best_of 21": ("completions", body_with("completions", best_of=21), "best_of", "integer_above_max_value"),
    "logprobs 6": ("completions", body_with("completions", logprobs=6), "logprobs", "integer_above_max_value"),
    "echo a string": ("completions", body_with("completions", echo="yes"), "echo", "invalid_type"),
    # embeddings
    "input empty": ("embeddings", body_with("embeddings", input=""), "input", "empty_string"),
    "input an empty array": ("embeddings", body_with("embeddings", input=[]), "input", "empty_array"),
    "input with an empty string": ("embeddings", body_with("embeddings", input=["a", ""]), "input[1]",
                                   "empty_string"),
    "input with an empty token array": ("embeddings", body_with("embeddings", input=[[1], []]), "input[1]",
                                        "empty_array"),
    "input token a decimal": ("embeddings", body_with("embeddings", input=[[1, 2.5]]), "input[0][1]",
                              "invalid_type"),
    "input of 2049": ("embeddings", body_with("embeddings", input=["a"] * 2049), "input", "array_above_max_length"),
    "input an object": ("embeddings", body_with("embeddings", input={"text": "a"}), "input", "invalid_type"),
    "dimensions 0": ("embeddings", body_with("embeddings", dimensions=0), "dimensions", "integer_below_min_value"),
    "dimensions a string": ("embeddings", body_with("embeddings", dimensions="8"), "dimensions", "invalid_type"),
    "encoding_format int8": ("embeddings", body_with("embeddings", encoding_format="int8"), "encoding_format",
                             "invalid_value"),
}  # fmt: skip


@pytest.mark.parametrize(("endpoint", "body", "param", "code"), list(INVALID.values()), ids=list(INVALID))
def test_an_invalid_parameter_is_refused_naming_it(endpoint: str, body: dict[str, Any], param: str, code: str) -> None:
    error = refusal(endpoint, body)
    assert (error.param, error.code) == (param, code), error.message
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    # OpenAI names the field in the message, except in "Invalid value: 'x'. Supported values are: ..."
    assert f"'{param}'" in error.message or code == "invalid_value"


def test_messages_follow_openais_wording() -> None:
    assert refusal(C, chat(max_tokens=-5)).message == (
        "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -5 instead."
    )
    assert refusal(C, chat({"role": "user", "content": 12})).message == (
        "Invalid type for 'messages[0].content': expected a string or an array of content parts, but got an integer "
        "instead."
    )
    assert refusal(C, chat({"role": "wizard", "content": "x"})).message == (
        "Invalid value: 'wizard'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and "
        "'developer'."
    )
    assert refusal(C, chat(model=DROP)).message == "Missing required parameter: 'model'."
    # A client's value is quoted shortly, never whole.
    assert len(refusal(C, chat({"role": "x" * 10_000, "content": "x"})).message) < 300


# Edge values OpenAI accepts: refusing any of them would break a drop-in client.
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "the smallest chat": (C, chat()),
    # Parts and tools of types OpenAI does not have are an OpenAI-compatible server's to judge (vLLM's video_url).
    "a part of a provider's own type": (C, chat({"role": "user", "content": [{"type": "video_url", "video_url": {
        "url": "https://example.com/v.mp4"}}]})),
    "a tool of a provider's own type": (C, chat(tools=[{"type": "web_search"}])),
    "nulls in optional fields": (C, chat(max_tokens=None, temperature=None, stop=None, tools=None, n=None,
                                         response_format=None, stream_options=None, user=None, seed=None)),
    "unknown fields pass through": (C, chat(some_vendor_option={"anything": [1, None]}, top_k=5, reasoning={"x": 1})),
    "temperature bounds": (C, chat(temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2.0)),
    "temperature 2": (C, chat(temperature=2, top_p=0.0)),
    "integral decimals": (C, chat(max_tokens=16.0, n=1.0, seed=3.0)),
    "max_tokens 1": (C, chat(max_tokens=1, max_completion_tokens=1)),
    "huge max_tokens": (C, chat(max_tokens=2**40)),
    "n 128": (C, chat(n=128)),
    "seed bounds": (C, chat(seed=-(2**63))),
    "seed max": (C, chat(seed=2**63 - 1)),
    "stop of four": (C, chat(stop=["a", "b", "c", "d"])),
    "stop a string": (C, chat(stop="\n")),
    "stop empty": (C, chat(stop=[])),
    "logit_bias bounds": (C, chat(logit_bias={"1": -100, "2": 100, "3": 0.5})),
    "logprobs": (C, chat(logprobs=True, top_logprobs=20)),
    "top_logprobs 0": (C, chat(logprobs=False, top_logprobs=0)),
    "stream with options": (C, chat(stream=True, stream_options={"include_usage": False})),
    "metadata": (C, chat(metadata={"customer": "acme", "": ""})),
    "every role": (C, chat(
        {"role": "system", "content": "s"},
        {"role": "developer", "content": [{"type": "text", "text": "d"}]},
        {"role": "user", "content": "", "name": "ana"},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL], "refusal": None},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "t"}, {"type": "refusal", "refusal": "no"}]},
        {"role": "function", "name": "f", "content": None},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "assistant", "audio": {"id": "audio_1"}},
    )),
    "every part": (C, chat({"role": "user", "content": [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"}},
    ]})),
    "content empty array": (C, chat({"role": "user", "content": []})),
    "a tool call without its type": (C, chat({"role": "assistant", "tool_calls": [{**TOOL_CALL, "type": None}]})),
    "tools and choices": (C, chat(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}},
               {"type": "custom", "custom": {"name": "grammar"}}],
        tool_choice={"type": "function", "function": {"name": "f"}}, parallel_tool_calls=False,
    )),
    "tool_choice strings": (C, chat(tool_choice="required")),
    "allowed tools": (C, chat(tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}})),
    "128 tools": (C, chat(tools=[{"type": "function", "function": {"name": "f"}}] * 128)),
    "legacy functions": (C, chat(functions=[{"name": "f", "parameters": {}}], function_call={"name": "f"})),
    "function_call auto": (C, chat(function_call="auto")),
    "response formats": (C, chat(response_format={"type": "json_schema", "json_schema": {
        "name": "o", "schema": {"type": "object"}, "strict": True}})),
    "json_object": (C, chat(response_format={"type": "json_object"})),
    "prompt strings": ("completions", body_with("completions", prompt=["a", ""], max_tokens=0, echo=True,
                                                logprobs=5, best_of=1, suffix="!")),
    "prompt empty string": ("completions", body_with("completions", prompt="")),
    "prompt tokens": ("completions", body_with("completions", prompt=[1, 2, 3])),
    "prompt token arrays": ("completions", body_with("completions", prompt=[[1, 2], [3]])),
    "input strings": ("embeddings", body_with("embeddings", input=["a", "b"], dimensions=1, encoding_format="base64")),
    "input tokens": ("embeddings", body_with("embeddings", input=[0, 100257])),
    "input token arrays": ("embeddings", body_with("embeddings", input=[[1, 2], [3]], encoding_format="float")),
    "input of 2048": ("embeddings", body_with("embeddings", input=["a"] * 2048)),
}  # fmt: skip


@pytest.mark.parametrize(("endpoint", "body"), list(VALID.values()), ids=list(VALID))
def test_values_openai_accepts_pass(endpoint: str, body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    validate(endpoint, body)
    assert body == before  # checked, never changed
