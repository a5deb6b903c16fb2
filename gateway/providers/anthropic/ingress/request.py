"""Anthropic's Messages API in, the canonical OpenAI chat request out: the request half of POST /v1/messages.

POST /v1/messages takes Anthropic's request format so that Anthropic's SDKs work against the gateway. The
pipeline, the router and every provider only ever see an OpenAI chat request, so any deployment can serve it.
A malformed request raises InvalidRequest whose message names the field as Anthropic's API does
(`messages.0.content.1.source: ...`). The answer's way back is in answer.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_EXACT_FLOAT_INT = 2**53


def to_chat_request(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The OpenAI chat body for an Anthropic Messages request. Raises InvalidRequest when it is malformed.

    `counting`: the body of POST /v1/messages/count_tokens, the same request without max_tokens (nothing is
    generated): the chat body has none either."""
    model = _required(body, "model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Input should be a non-empty string")
    max_tokens = None if counting else _max_tokens(body)
    turns = _required(body, "messages")
    if not isinstance(turns, list):
        raise _invalid("messages", "Input should be a valid list")
    if not turns:
        raise _invalid("messages", "At least one message is required")
    messages = _system(body.get("system"))
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, f"messages.{i}"))
    chat: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")
    if stream:
        chat["stream"] = True
        # The stream's closing message_delta carries the usage: always ask the upstream for its usage chunk.
        chat["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p"):  # both 0..1 in Anthropic's API (OpenAI's temperature goes to 2)
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise _invalid(name, "Input should be a valid number")
            if not 0 <= value <= 1:
                raise _invalid(name, "Input should be greater than or equal to 0 and less than or equal to 1")
            chat[name] = value
    # top_k has no OpenAI equivalent; like thinking, output_config.effort, service_tier and the other
    # Anthropic-only options, it is dropped: the upstream may be any provider. Its type is still checked, as
    # Anthropic's API does.
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _invalid("top_k", "Input should be an integer greater than or equal to 0")
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise _invalid("thinking", "Input should be a valid dictionary")
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop_sequences", "Input should be a list of strings")
        if stop:
            chat["stop"] = stop
    tools = body.get("tools")
    if tools is not None:
        chat["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        value, parallel = _tool_choice(choice)
        if chat.get("tools"):  # OpenAI rejects tool_choice and parallel_tool_calls without tools
            chat["tool_choice"] = value
            if not parallel:
                chat["parallel_tool_calls"] = False
    output = body.get("output_config")
    if output is not None:
        response_format = _response_format(output)
        if response_format is not None:
            chat["response_format"] = response_format
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _invalid("metadata", "Input should be a valid dictionary")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise _invalid("metadata.user_id", "Input should be a valid string")
        if user_id:
            chat["user"] = user_id
    return chat


def _max_tokens(body: dict[str, Any]) -> int:
    max_tokens = _required(body, "max_tokens")
    # 0 is valid for Anthropic (it warms the prompt cache without generating): the upstream decides.
    if not _is_int(max_tokens) or max_tokens < 0:
        raise _invalid("max_tokens", "Input should be an integer greater than or equal to 0")
    return int(max_tokens)  # 32.0 is 32, as Anthropic's validation reads it


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise _invalid("system", "Input should be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(system):
        if _block_type(block, f"system.{i}") != "text":
            raise _invalid(f"system.{i}.type", "Input should be 'text'")
        texts.append(_text(block, f"system.{i}"))
    return [{"role": "system", "content": "\n".join(texts)}] if texts else []


def _turn(turn: Any, at: str) -> list[dict[str, Any]]:
    """One Anthropic message: one OpenAI message, or for a user turn with tool results, a `tool` message per
    result (OpenAI wants them right after the assistant's tool calls) and then the user's own content."""
    if not isinstance(turn, dict):
        raise _invalid(at, "Input should be a valid dictionary")
    role = turn.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"{at}.role", "Input should be 'user' or 'assistant'")
    content = turn.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{at}.content", "Input should be a string or a list of content blocks")
    return _assistant(content, at) if role == "assistant" else _user(content, at)


def _user(blocks: list[Any], at: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{at}.content.{j}"
        if _block_type(block, where) == "tool_result":
            results.append(_tool_result(block, where, parts))
        else:
            parts.append(_part(block, where))
    if parts or not results:
        results.append({"role": "user", "content": _collapse(parts)})
    return results


def _assistant(blocks: list[Any], at: str) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{at}.content.{j}"
        kind = _block_type(block, where)
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning, signed for Anthropic only: OpenAI's chat format has no place for it
        else:
            raise _invalid(f"{where}.type", f"Content block type '{kind}' is not supported in an assistant turn")
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif not texts:
        message["content"] = ""
    return [message]


def _part(block: dict[str, Any], at: str) -> dict[str, Any]:
    """A user content block as an OpenAI content part."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": _text(block, at)}
    if kind not in ("image", "document"):
        raise _invalid(f"{at}.type", f"Content block type '{kind}' is not supported in a user turn")
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{at}.source", "Field required")
    source_type = source.get("type")
    data = source.get("data")
    if kind == "image":
        if source_type == "base64":
            media_type = source.get("media_type")
            if not isinstance(media_type, str) or not isinstance(data, str):
                raise _invalid(f"{at}.source", "A base64 source needs a media_type and data")
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
        if source_type == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
        raise _invalid(f"{at}.source", "An image source should be base64 data or a url")
    # a document
    if source_type == "text" and isinstance(data, str):
        return {"type": "text", "text": data}
    if source_type == "base64" and source.get("media_type") == "application/pdf" and isinstance(data, str):
        title = block.get("title")
        filename = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:application/pdf;base64,{data}"}}
    raise _invalid(f"{at}.source", "A document source should be text, or base64 data of a PDF")


def _tool_result(block: dict[str, Any], at: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A tool_result as an OpenAI `tool` message. Its images cannot go in a tool message: they join the user
    message that follows the tool messages."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{at}.tool_use_id", "Field required")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for k, item in enumerate(content):
            where = f"{at}.content.{k}"
            if _block_type(item, where) == "text":
                texts.append(_text(item, where))
            else:
                parts.append(_part(item, where))
        text = "\n".join(texts)
    else:
        raise _invalid(f"{at}.content", "Input should be a string or a list of content blocks")
    if block.get("is_error") is True:
        # OpenAI's tool message has no error flag: say it in the text, where the model will read it.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _tool_call(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id = block.get("id")
    name = block.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{at}.id", "Field required")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{at}.name", "Field required")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _invalid(f"{at}.input", "Input should be a valid dictionary")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"tools.{i}", "Input should be a valid dictionary")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # Server tools (web search, code execution...) run inside Anthropic's API, which may not serve this.
            raise _invalid(f"tools.{i}.type", f"Tool type '{kind}' is not supported: only custom tools are")
        name = tool.get("name")
        schema = tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools.{i}.name", "Field required")
        if not isinstance(schema, dict):
            raise _invalid(f"tools.{i}.input_schema", "Field required")
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> tuple[str | dict[str, Any], bool]:
    """OpenAI's tool_choice, and whether parallel tool calls are allowed."""
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _invalid("tool_choice", "Input should be an object with a type")
    parallel = choice.get("disable_parallel_tool_use") is not True
    kind = choice["type"]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.name", "Field required")
        return {"type": "function", "function": {"name": name}}, parallel
    if kind in _TOOL_CHOICES:
        return _TOOL_CHOICES[kind], parallel
    raise _invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")


def _response_format(output: Any) -> dict[str, Any] | None:
    """output_config.format, Anthropic's structured output, as OpenAI's json_schema response_format."""
    if not isinstance(output, dict):
        raise _invalid("output_config", "Input should be a valid dictionary")
    fmt = output.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _invalid("output_config.format", "Input should be a json_schema format with a schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone text part as a plain string, which every OpenAI-compatible server accepts; else the parts."""
    if not parts:
        return ""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _block_type(block: Any, at: str) -> str:
    if not isinstance(block, dict):
        raise _invalid(at, "Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{at}.type", "Field required")
    return kind


def _text(block: dict[str, Any], at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{at}.text", "Input should be a valid string")
    return text


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise _invalid(name, "Field required")
    return value


def _invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", param=field)


def _is_int(value: Any) -> bool:
    """An integer, or a decimal with nothing after the point (JSON does not tell 32 from 32.0) that is one exactly
    (1e300 is integral too, but as an int it is too large for any JSON encoder)."""
    cls = type(value)
    return cls is int or (cls is float and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
