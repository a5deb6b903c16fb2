"""Checks of the request body's well-known fields. Unknown fields pass through untouched."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

_INT = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
_NUMBER = ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
_BOOL = ("a boolean", lambda v: isinstance(v, bool))
_STRING = ("a string", lambda v: isinstance(v, str))
_OBJECT = ("an object", lambda v: isinstance(v, dict))
_ARRAY = ("an array", lambda v: isinstance(v, list))
_STRING_OR_ARRAY = ("a string or an array", lambda v: isinstance(v, str | list))
_STRING_OR_OBJECT = ("a string or an object", lambda v: isinstance(v, str | dict))

_COMMON = {
    "model": _STRING,
    "stream": _BOOL,
    "stream_options": _OBJECT,
    "max_tokens": _INT,
    "n": _INT,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "seed": _INT,
    "user": _STRING,
    "stop": _STRING_OR_ARRAY,
    "logit_bias": _OBJECT,
}
FIELDS: dict[str, dict[str, tuple[str, Any]]] = {
    "chat/completions": {
        **_COMMON,
        "messages": _ARRAY,
        "max_completion_tokens": _INT,
        "tools": _ARRAY,
        "tool_choice": _STRING_OR_OBJECT,
        "parallel_tool_calls": _BOOL,
        "response_format": _OBJECT,
        "logprobs": _BOOL,
        "top_logprobs": _INT,
        "metadata": _OBJECT,
    },
    "completions": {**_COMMON, "prompt": _STRING_OR_ARRAY, "logprobs": _INT, "echo": _BOOL, "suffix": _STRING},
    "embeddings": {
        "model": _STRING,
        "input": _STRING_OR_ARRAY,
        "encoding_format": _STRING,
        "dimensions": _INT,
        "user": _STRING,
    },
}
REQUIRED = {
    "chat/completions": ("model", "messages"),
    "completions": ("model", "prompt"),
    "embeddings": ("model", "input"),
}


def validate(endpoint: str, body: dict[str, Any]) -> None:
    for name in REQUIRED[endpoint]:
        if name not in body or body[name] is None:
            raise InvalidRequest(
                f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
            )
    for name, (expected, check) in FIELDS[endpoint].items():
        value = body.get(name)
        if value is not None and not check(value):
            raise InvalidRequest(
                f"Invalid type for '{name}': expected {expected}, but got {_kind(value)} instead.",
                param=name,
                code="invalid_type",
            )
    if endpoint == "chat/completions":
        _check_messages(body["messages"])
    elif endpoint == "embeddings" and body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest(
            "Invalid value for 'encoding_format': expected 'float' or 'base64'.", param="encoding_format"
        )
    if body.get("stream") is not True and body.get("stream_options") is not None:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )


def _check_messages(messages: list[Any]) -> None:
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"Invalid type for 'messages[{i}]': expected an object.", param=f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"Missing required parameter: 'messages[{i}].role'.", param=f"messages[{i}].role")


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), "null")
