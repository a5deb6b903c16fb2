"""Checks of a request body's well-known fields: their types and ranges, as OpenAI's API checks them.

One pass over the body's fields: each known one is checked by its rule (rules.py, chat.py); unknown fields pass
through untouched, as do nulls in optional fields. An error is InvalidRequest, a 400 whose `param` is the path of
the field (`messages[0].content[1].type`) and whose `code` is OpenAI's (`invalid_type`, `invalid_value`,
`missing_required_parameter`, `integer_below_min_value`...). Never stricter than OpenAI: a body OpenAI takes,
the gateway takes.
"""

from __future__ import annotations

from typing import Any

from gateway.api.validation import chat
from gateway.api.validation.rules import (
    Check,
    Invalid,
    array,
    boolean,
    integer,
    logit_bias,
    missing,
    number,
    obj,
    one_of,
    stop,
    string,
    string_map,
    texts_or_tokens,
)
from gateway.errors import InvalidRequest

__all__ = ["FIELDS", "REQUIRED", "validate"]

_INT64 = 2**63
_SAMPLING: dict[str, Check] = {
    "model": string,
    "stream": boolean,
    "stream_options": chat.stream_options,
    "n": integer(1, 128),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(-_INT64, _INT64 - 1),
    "user": string,
    "stop": stop,
    "logit_bias": logit_bias,
}

FIELDS: dict[str, dict[str, Check]] = {
    "chat/completions": {
        **_SAMPLING,
        "messages": chat.messages,
        "max_tokens": integer(1),
        "max_completion_tokens": integer(1),
        "tools": chat.tools,
        "tool_choice": chat.tool_choice,
        "parallel_tool_calls": boolean,
        "functions": chat.functions,
        "function_call": chat.function_call,
        "response_format": chat.response_format,
        "logprobs": boolean,
        "top_logprobs": integer(0, 20),
        "metadata": string_map,
        "store": boolean,
        "modalities": array,
        "audio": obj,
        "prediction": obj,
        "reasoning_effort": string,
        "service_tier": string,
        "verbosity": string,
        "web_search_options": obj,
        "prompt_cache_key": string,
        "safety_identifier": string,
    },
    "completions": {
        **_SAMPLING,
        "prompt": texts_or_tokens(non_empty=False),
        "max_tokens": integer(0),
        "best_of": integer(0, 20),
        "echo": boolean,
        "logprobs": integer(0, 5),
        "suffix": string,
    },
    "embeddings": {
        "model": string,
        "input": texts_or_tokens(non_empty=True, max_items=2048),
        "dimensions": integer(1),
        "encoding_format": one_of("float", "base64"),
        "user": string,
    },
}
REQUIRED = {
    "chat/completions": ("model", "messages"),
    "completions": ("model", "prompt"),
    "embeddings": ("model", "input"),
}


def validate(endpoint: str, body: dict[str, Any]) -> None:
    """Raise InvalidRequest for the first field of `body` that OpenAI would refuse."""
    checks = FIELDS[endpoint]
    try:
        for name in REQUIRED[endpoint]:
            if body.get(name) is None:
                raise missing(name)
        for name, value in body.items():
            if value is not None:
                check = checks.get(name)
                if check is not None:
                    check(value, name)
    except Invalid as exc:
        raise exc.error() from None
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
