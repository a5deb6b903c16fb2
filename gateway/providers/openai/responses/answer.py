"""A whole chat completion as a Response object: the answer half of POST /v1/responses (stream.py does the same
for a stream, event by event, with the same pieces).

The Response echoes the request's settings as OpenAI's does (instructions, tools in the Responses shape,
tool_choice, text.format, ...), so that the openai SDK's `Response` model, and the code that reads it, find every
field it expects.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import Usage

# finish_reason -> incomplete_details.reason: the answers that stopped before the model was done.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_object(
    request: dict[str, Any],
    *,
    response_id: str,
    model: str,
    created_at: float,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object as OpenAI's API returns it, for the Responses `request` (the client's body)."""
    response = _TEMPLATE.copy()  # a copy of a dict is one block copied: cheaper than 28 keys inserted one by one
    response["id"] = response_id
    response["created_at"] = int(created_at)
    response["status"] = status
    response["error"] = error
    response["incomplete_details"] = incomplete_details
    response["model"] = model
    response["output"] = output
    # What the client sent (not null) is echoed, else the API's default: the body's few fields walked (a set made
    # by intersection() and a lookup per field cost some 3,000 instructions more).
    for name, value in request.items():
        if name in _ECHOED and value is not None:
            response[name] = value
    get = request.get
    reasoning = get("reasoning")
    if isinstance(reasoning, dict):
        response["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    else:
        response["reasoning"] = {"effort": None, "summary": None}
    text = get("text")
    text = text if isinstance(text, dict) else {}
    fmt, verbosity = text.get("format"), text.get("verbosity")
    response["text"] = {"format": fmt or {"type": "text"}, "verbosity": verbosity or "medium"}
    response["tools"] = _tools(tools) if (tools := get("tools")) else []
    response["usage"] = usage_json(usage) if usage is not None else None
    response["metadata"] = get("metadata") or {}
    return response


# The Response object's fields in OpenAI's order, with the API's defaults; response_object() fills in the rest.
_TEMPLATE: dict[str, Any] = {
    "id": None,
    "object": "response",
    "created_at": 0,
    "status": None,
    "background": False,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "model": None,
    "output": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": None,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": None,
    "tool_choice": "auto",
    "tools": None,
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": None,
    "user": None,
    "metadata": None,
}
# _TEMPLATE with the defaults of the fields response_object() builds from the request already JSON, for
# response_bytes(): its requests send none of them (_BUILT).
_FAST_TEMPLATE: dict[str, Any] = {
    **_TEMPLATE,
    "reasoning": orjson.Fragment(b'{"effort":null,"summary":null}'),
    "text": orjson.Fragment(b'{"format":{"type":"text"},"verbosity":"medium"}'),
    "tools": orjson.Fragment(b"[]"),
    "metadata": orjson.Fragment(b"{}"),
}
_BUILT = frozenset(("reasoning", "text", "tools", "metadata"))
# response_bytes()'s output item around its id, status and text (message_item() of output_text(), as JSON).
_OUTPUT_HEAD = b'[{"id":'
_OUTPUT_STATUS = b',"type":"message","role":"assistant","status":'
_COMPLETED, _INCOMPLETE = b'"completed"', b'"incomplete"'
_OUTPUT_TEXT = b',"content":[{"type":"output_text","text":'
_OUTPUT_TAIL = b',"annotations":[],"logprobs":[]}]}]'
_dumps = orjson.dumps
_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d},"output_tokens":%d,'
    b'"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
)
# The request's fields a Response echoes as they came.
_ECHOED = frozenset(
    (
        "instructions", "max_output_tokens", "max_tool_calls", "parallel_tool_calls", "previous_response_id",
        "safety_identifier", "prompt_cache_key", "store", "temperature", "tool_choice", "top_p", "truncation", "user",
    )
)  # fmt: skip


def to_response(
    chat: dict[str, Any],
    request: dict[str, Any],
    *,
    request_id: str,
    model: str,
    created_at: float,
    usage: Usage | None,
) -> dict[str, Any]:
    """A whole chat completion as a Response: the message item (its text, its refusal) and a function_call item
    per tool call. `usage` is the gateway's (the answer's own when None); `model` is used when the answer names
    none. A finish_reason of "length" or "content_filter" makes the response incomplete, as OpenAI's are."""
    output, reason, usage, served = _answered(chat, request_id, model, usage)
    return response_object(
        request,
        response_id=f"resp_{request_id}",
        model=served,
        created_at=created_at,
        status="incomplete" if reason else "completed",
        output=output,
        usage=usage,
        incomplete_details={"reason": reason} if reason else None,
    )


def response_bytes(
    chat: dict[str, Any],
    request: dict[str, Any],
    *,
    request_id: str,
    model: str,
    created_at: float,
    usage: Usage | None,
) -> bytes | None:
    """json_bytes(to_response(...)), byte for byte, for the common answer: a message of text alone (no tool calls,
    no refusal) to a request that echoes no reasoning, text, tools or metadata. One orjson call on a copy of a
    template whose fixed parts are already JSON (orjson.Fragment), filled in place: no Response dict of nested
    dicts built and then encoded. None for anything else: to_response() makes it."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or message.get("tool_calls") or message.get("refusal"):
        return None
    response = _FAST_TEMPLATE.copy()
    for name, value in request.items():
        if name in _ECHOED:
            if value is not None:
                response[name] = value
        elif name in _BUILT and value is not None:  # echoed as built from what it holds: to_response()'s work
            return None
    text = message.get("content")
    finish = choice.get("finish_reason")  # type: ignore[union-attr]  # a dict: message is one
    reason = INCOMPLETE_REASONS.get(finish) if isinstance(finish, str) else None
    status = "incomplete" if reason else "completed"
    if usage is None:
        reported = chat.get("usage")
        usage = Usage.from_openai(reported) if isinstance(reported, dict) else None
    served = chat.get("model")
    response["id"] = f"resp_{request_id}"
    response["created_at"] = int(created_at)
    response["status"] = status
    if reason:
        response["incomplete_details"] = {"reason": reason}
    response["model"] = served if isinstance(served, str) and served else model
    # The output, one message item, as JSON spliced from its fixed parts: no item, part and lists built, then walked
    # (some 2,000 instructions fewer).
    try:
        output = b"".join(
            (
                _OUTPUT_HEAD,
                _dumps(f"msg_{request_id}"),
                _OUTPUT_STATUS,
                _INCOMPLETE if reason else _COMPLETED,
                _OUTPUT_TEXT,
                _dumps(text if isinstance(text, str) else ""),
                _OUTPUT_TAIL,
            )
        )
    except TypeError:  # a lone surrogate: json_bytes() of to_response()'s answer makes it safe
        return None
    response["output"] = orjson.Fragment(output)
    if usage is not None:  # usage_json()'s, as JSON: its three dicts neither built nor walked
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        response["usage"] = orjson.Fragment(
            _USAGE
            % (
                prompt,
                usage.cached_tokens,
                usage.cache_write_tokens,
                completion,
                usage.reasoning_tokens,
                prompt + completion,
            )
        )
    try:
        return orjson.dumps(response)
    except TypeError:  # what JSON has no type for (a filter's doing): json_bytes() of to_response()'s answer
        return None


def _answered(
    chat: dict[str, Any], request_id: str, model: str, usage: Usage | None
) -> tuple[list[dict[str, Any]], str | None, Usage | None, str]:
    """What a Response takes from a whole chat completion: (its output items, why it is incomplete or None, its
    usage, the model that served it)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason")
    reason = INCOMPLETE_REASONS.get(finish) if isinstance(finish, str) else None
    calls = message.get("tool_calls")
    function_calls = (
        [
            function_call_item(call, request_id, n)
            for n, call in enumerate(calls)
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        if calls and isinstance(calls, list)
        else []
    )
    parts = []
    text = message.get("content")
    if isinstance(text, str) and (text or not function_calls):
        parts.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})  # output_text()
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    output = []
    if parts or not function_calls:  # an answer with nothing in it still has its (empty) message
        output.append(message_item(request_id, parts or [output_text("")], "incomplete" if reason else "completed"))
    if function_calls:
        output += function_calls
    if usage is None:
        reported = chat.get("usage")
        usage = Usage.from_openai(reported) if isinstance(reported, dict) else None
    served = chat.get("model")
    return output, reason, usage, served if isinstance(served, str) and served else model


def message_item(request_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": f"msg_{request_id}", "type": "message", "role": "assistant", "status": status, "content": parts}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call: dict[str, Any], request_id: str, n: int) -> dict[str, Any]:
    """A chat tool call as a function_call item. An upstream that gave no call id gets one made up, which the
    client sends back with the call's output."""
    function = call["function"]
    call_id = call.get("id")
    name = function.get("name")
    arguments = function.get("arguments")
    return {
        "id": f"fc_{request_id}_{n}",
        "type": "function_call",
        "status": "completed",
        "call_id": call_id if isinstance(call_id, str) and call_id else f"call_{request_id}_{n}",
        "name": name if isinstance(name, str) else "",
        "arguments": arguments if isinstance(arguments, str) else "",
    }


def usage_json(usage: Usage) -> dict[str, Any]:
    """Responses' usage. cache_write_tokens is required by the openai SDK's model (3.63): the gateway knows it
    when the provider reports it (Anthropic's cache writes), else it is 0."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def error_json(status: int, message: str) -> dict[str, Any]:
    """A failed response's `error`: OpenAI's codes there are few (server_error, rate_limit_exceeded,
    invalid_prompt...), so the status picks one and the message says the rest."""
    if status == 429:
        code = "rate_limit_exceeded"
    elif 400 <= status < 500:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": message}


def _tools(tools: Any) -> list[dict[str, Any]]:
    """The request's function tools as the Response echoes them (request.py refused every other kind)."""
    out = []
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            out.append(
                {
                    "type": "function",
                    "name": tool.get("name"),
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters"),
                    "strict": tool.get("strict"),
                }
            )
    return out
