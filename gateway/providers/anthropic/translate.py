"""Pure translations between OpenAI's chat format and Anthropic's Messages API: the request, the whole answer and
its usage. The stream's translation is in stream.py, the errors' in errors.py.

Where the two APIs differ, these are the choices (each is also noted where it is made):

- system and developer messages, wherever they stand, are hoisted into the top-level `system`, joined by a
  newline, as Anthropic's own OpenAI compatibility layer does;
- consecutive messages of one role are merged (Anthropic wants user and assistant turns to alternate), and
  `tool` messages become `tool_result` blocks of a user turn;
- `max_tokens` is required by Anthropic: max_completion_tokens, else max_tokens, else DEFAULT_MAX_TOKENS;
- `temperature` is capped at 1 (Anthropic's range is 0-1, OpenAI's 0-2);
- whitespace-only stop sequences are dropped: Anthropic refuses them;
- response_format json_schema becomes a forced tool named after the schema, whose input is the answer (the
  technique Anthropic documents for JSON output); json_object becomes a system instruction, because prefilling
  "{" (the other documented technique) is refused with extended thinking and must be stitched back on;
- reasoning_effort is dropped: Anthropic's own compatibility layer ignores it, and its `thinking` budget and
  `output_config.effort` are accepted only by some models, so sending either could fail a request that works;
- every other OpenAI field (seed, logprobs, penalties, logit_bias, store, metadata...) means nothing to
  Anthropic, whose API refuses unknown fields: they are dropped;
- what cannot be expressed (audio input, n > 1, non-function tools) raises UnsupportedRequest: a clear 400 is
  better than an answer to a request that was silently changed;
- in answers, thinking blocks are dropped (OpenAI's chat format has no place for them), stop reasons map as in
  FINISH_REASONS, and usage counts cache reads and writes in prompt_tokens, as OpenAI's does;
- errors (errors.py): 529 overloaded becomes 503, which the OpenAI SDK and the router retry; error types map
  to OpenAI's; "prompt is too long" gets code context_length_exceeded, the content filter's block
  content_policy_violation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.context import Usage
from gateway.providers.base import UnsupportedRequest

DEFAULT_MAX_TOKENS = 4096
JSON_OBJECT_INSTRUCTION = "Respond with one valid JSON object only: no text before or after it, no code fences."
ANSWER_TOOL_DESCRIPTION = "Give your final answer by calling this tool; its input is the answer."

# Anthropic's stop_reason -> OpenAI's finish_reason. pause_turn (a long server-tool turn paused) has no OpenAI
# counterpart: the turn did end, so "stop".
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


@dataclass(frozen=True, slots=True)
class AnthropicRequest:
    body: dict[str, Any]
    # The forced tool that stands for response_format json_schema: its input is the answer's content.
    answer_tool: str | None = None


# -- request ---------------------------------------------------------------------------------------------------------


def to_anthropic(body: dict[str, Any], model: str) -> AnthropicRequest:
    """The Messages API body for an OpenAI chat request (already checked by gateway.api.validation)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise UnsupportedRequest("Only n=1 is supported by this model's provider.", param="n")
    system, messages = _messages(body.get("messages") or [])
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": _max_tokens(body)}
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls") is not False)
    answer_tool: str | None = None
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            answer, tool_choice = _answer_tool(response_format.get("json_schema"), tools, body.get("tool_choice"))
            answer_tool = answer["name"]
            tools.append(answer)
        elif kind == "json_object":
            system.append(JSON_OBJECT_INSTRUCTION)
        elif kind not in (None, "text"):
            raise UnsupportedRequest(f"Unsupported response_format type {kind!r}.", param="response_format")
    if system:
        out["system"] = "\n".join(system)
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
    _sampling(body, out)
    if body.get("stream") is True:
        out["stream"] = True
    return AnthropicRequest(out, answer_tool)


def _max_tokens(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_TOKENS


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(float(temperature), 1.0)
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool):
        out["top_p"] = top_p
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    sequences = [s for s in sequences if isinstance(s, str) and s.strip()]
    if sequences:
        out["stop_sequences"] = sequences
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}


def _messages(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), f"{param}.content")
            if text:
                system.append(text)
            continue
        if role == "user":
            target, blocks = "user", _content_blocks(message.get("content"), f"{param}.content")
        elif role == "assistant":
            target, blocks = "assistant", _assistant_blocks(message, param)
        elif role == "tool":
            target, blocks = "user", [_tool_result(message, param)]
        else:
            raise UnsupportedRequest(f"Unsupported message role {role!r}.", param=f"{param}.role")
        if not blocks:
            continue  # Anthropic refuses empty turns
        if out and out[-1]["role"] == target:
            out[-1]["content"].extend(blocks)  # consecutive tool results (or turns of one role) make one turn
        else:
            out.append({"role": target, "content": blocks})
    for message in out:
        # A lone text block is sent in the documented shorthand, a plain string.
        content = message["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]
    return system, out


def _plain_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise UnsupportedRequest("System messages may hold only text.", param=f"{param}[{j}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise UnsupportedRequest("Message content must be a string or an array of parts.", param=param)


def _content_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []  # Anthropic refuses empty text blocks
    if not isinstance(content, list):
        raise UnsupportedRequest("Message content must be a string or an array of parts.", param=param)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):  # an assistant's earlier refusal is text the model said
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{param}[{j}].image_url"))
        elif kind == "file":
            blocks.append(_document(part.get("file"), f"{param}[{j}].file"))
        else:
            raise UnsupportedRequest(f"Unsupported content part type {kind!r}.", param=f"{param}[{j}]")
    return blocks


def _image(image_url: Any, param: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = _data_url(url, param)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _document(file: Any, param: str) -> dict[str, Any]:
    data_url = file.get("file_data") if isinstance(file, dict) else None
    if data_url is None:
        raise UnsupportedRequest("Only files given inline as file_data are supported (no file_id).", param=param)
    media_type, data = _data_url(data_url, f"{param}.file_data")
    if media_type != "application/pdf":
        raise UnsupportedRequest(f"Unsupported file type {media_type!r}: only PDF documents.", param=param)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _data_url(url: Any, param: str) -> tuple[str, str]:
    """`data:<media type>;base64,<data>` -> (media type, data)."""
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding == "base64" and media_type and data:
            return media_type, data
    raise UnsupportedRequest("Expected an http(s) URL or a base64 data: URL.", param=param)


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks = _content_blocks(message.get("content"), f"{param}.content")
    tool_calls = message.get("tool_calls")
    for j, call in enumerate(tool_calls if isinstance(tool_calls, list) else []):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(call.get("id"), str)):
            raise UnsupportedRequest("A tool call needs an id and a function.", param=where)
        arguments = _arguments(function.get("arguments"), f"{where}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function.get("name"), "input": arguments})
    return blocks


def _arguments(arguments: Any, param: str) -> dict[str, Any]:
    if arguments in (None, ""):
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        # Anthropic's tool_use input is always an object: there is no faithful way to send anything else.
        raise UnsupportedRequest("Tool call arguments must be a JSON object.", param=param)
    return parsed


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise UnsupportedRequest("A tool message needs its tool_call_id.", param=f"{param}.tool_call_id")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content is not None:
        blocks = _content_blocks(content, f"{param}.content")
        if blocks:
            result["content"] = blocks
    return result


def _tools(tools: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UnsupportedRequest("Only function tools, with a name, are supported.", param=f"tools[{i}]")
        schema = function.get("parameters")
        entry: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        # OpenAI lets a function without parameters stand for "no arguments"; Anthropic needs a schema.
        entry["input_schema"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: bool) -> dict[str, Any] | None:
    if choice == "none":
        return {"type": "none"}
    if choice is None or choice == "auto":
        result: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise UnsupportedRequest(f"Unsupported tool_choice {choice!r}.", param="tool_choice")
    if not parallel:
        result["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is OpenAI's: auto, parallel calls allowed
    return result


def _answer_tool(
    json_schema: Any, tools: list[dict[str, Any]], client_choice: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tool standing for a json_schema response format, and the tool_choice that makes the model use it.

    Without tools of the client's, the answer tool is forced. With them, the model must call some tool ("any"):
    one of the client's functions, or the answer tool to give its final answer; a function the client named
    stays forced.
    """
    spec = json_schema if isinstance(json_schema, dict) else {}
    schema = spec.get("schema")
    name = spec.get("name") if isinstance(spec.get("name"), str) and spec.get("name") else "json_answer"
    description = spec.get("description") if isinstance(spec.get("description"), str) else ANSWER_TOOL_DESCRIPTION
    # OpenAI's schema is optional (any JSON object); Anthropic's input_schema is required.
    input_schema = schema if isinstance(schema, dict) else {"type": "object"}
    tool = {"name": name, "description": description, "input_schema": input_schema}
    if not tools or client_choice == "none":
        return tool, {"type": "tool", "name": name}
    if isinstance(client_choice, dict):
        return tool, {"type": "tool", "name": client_choice.get("function", {}).get("name")}
    return tool, {"type": "any"}


# -- whole answer ----------------------------------------------------------------------------------------------------


def finish_reason(stop_reason: Any, has_tool_calls: bool) -> str:
    if stop_reason == "tool_use" and not has_tool_calls:
        return "stop"  # only the answer tool was used: to the client, that is a plain answer
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def to_openai(message: dict[str, Any], answer_tool: str | None, created: int) -> dict[str, Any]:
    """An Anthropic `message` object as an OpenAI `chat.completion`."""
    texts: list[str] = []
    answer: str | None = None
    tool_calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if answer_tool is not None and block.get("name") == answer_tool:
                answer = arguments
            else:
                function = {"name": block.get("name"), "arguments": arguments}
                tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
        # thinking, redacted_thinking and server-tool blocks: OpenAI's chat format has no place for them
    text = answer if answer is not None else "".join(texts)  # the client asked for JSON: only the JSON
    reply: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    finish = finish_reason(message.get("stop_reason"), bool(tool_calls))
    out: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
    }
    usage = message.get("usage")
    if isinstance(usage, dict):
        out["usage"] = openai_usage(usage_of(usage))
    return out


def usage_of(usage: dict[str, Any]) -> Usage:
    """Anthropic's usage: input_tokens excludes the cached and cache-write tokens; OpenAI's prompt_tokens (and
    the gateway's) include them. output_tokens includes thinking, as completion_tokens includes reasoning."""
    read = _count(usage.get("cache_read_input_tokens"))
    write = _count(usage.get("cache_creation_input_tokens"))
    details = usage.get("output_tokens_details")
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")) + read + write,
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=_count(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
