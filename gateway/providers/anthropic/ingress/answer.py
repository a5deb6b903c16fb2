"""A whole OpenAI chat answer as an Anthropic Message, and gateway errors in Anthropic's error shape.

The other half of POST /v1/messages (request.py translates the request): what the pipeline answered,
in OpenAI's format from whichever provider served it, goes back to the client in Anthropic's.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import Usage

# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say which stop sequence matched, so a stop is
# always end_turn, never stop_sequence.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# HTTP status -> Anthropic error type, as Anthropic documents them. The status decides, not the gateway's own
# type: a 404 is not_found_error for Anthropic where OpenAI says invalid_request_error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPES = frozenset(_ERROR_TYPES.values())


# -- the answer ------------------------------------------------------------------------------------------------


def to_message(answer: dict[str, Any], *, message_id: str, model: str, usage: Usage | None) -> dict[str, Any]:
    """A whole OpenAI chat answer as an Anthropic Message. `usage` is the gateway's (the answer's when None)."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else ()):
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            content.append(tool_use_block(call, f"toolu_{message_id}_{i}"))
    finish = choice.get("finish_reason")
    stop_reason = "refusal" if refusal else STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else None
    if usage is None:
        reported = answer.get("usage")
        usage = Usage.from_openai(reported) if isinstance(reported, dict) else Usage()
    served = answer.get("model")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": served if isinstance(served, str) and served else model,
        "content": content,
        "stop_reason": stop_reason or "end_turn",
        "stop_sequence": None,
        "usage": usage_json(usage),
    }


def tool_use_block(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    function = call["function"]
    call_id = call.get("id")
    name = function.get("name")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else fallback_id,
        "name": name if isinstance(name, str) else "",
        "input": tool_input(function.get("arguments")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string in OpenAI's format) as the object Anthropic's `input` must be."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        parsed = None
    # Arguments that are not a JSON object (a model's broken JSON) are kept, not dropped, under one key.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def usage_json(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: input_tokens counts only the input read neither from nor into the cache, where
    OpenAI's prompt_tokens counts it all."""
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    return {
        "input_tokens": max(0, usage.prompt_tokens - cached - written),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


# -- errors ----------------------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    found = _ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def error_json(status: int, message: str, request_id: str = "", kind: str | None = None) -> bytes:
    """Anthropic's error body. `kind` overrides the type the status implies (an upstream's own Anthropic type)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": kind or error_type(status), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def openai_error_message(body: bytes) -> str:
    """The message of an OpenAI-shaped error body (a filter's reply), or a generic one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message else "The request failed."
