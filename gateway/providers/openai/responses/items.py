"""Responses input items: checked and normalised (normalise_input), and turned into chat messages
(items_to_messages).

A turn's input is a string or a list of items. Each item is normalised to the shape `input_items.list` returns
(an id, a type, status "completed", content parts in their full form), which is also what is kept for the next
turns: a later turn's history is made of these items and of earlier outputs, which have the same shapes, so
items_to_messages reads only normalised items and never fails on them.

Chat has fewer places than Responses: a function_call joins the assistant message before it (as tool_calls); a
function_call_output becomes a `tool` message, and its images, which a tool message cannot carry, follow the run
of tool messages in a user message; reasoning items are dropped (the chat format has no place for them); a
developer message becomes a system message, which every OpenAI-compatible server takes.
"""

from __future__ import annotations

from typing import Any

from gateway import refusals
from gateway.errors import InvalidRequest
from gateway.providers.openai.responses import checks

ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")
INPUT_PARTS = ("input_text", "input_image", "input_file")
ASSISTANT_PARTS = ("output_text", "refusal", "input_text")
IMAGE_DETAILS = ("auto", "low", "high", "original")
_TEXT_ONLY = ("input_text",)


def normalise_input(value: Any, request_id: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This turn's input as normalised items. An item without an id gets `in_<request_id>_<n>`; an
    item_reference is replaced by the earlier item (of `history`) it names."""
    if type(value) is str:
        return [string_input(value, request_id)]
    items = checks.array(value, "input")
    earlier: dict[str, dict[str, Any]] | None = None
    out = []
    for n, item in enumerate(items):
        at = f"input[{n}]"
        checks.obj(item, at)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # an EasyInputMessage: {role, content} with no type
        elif kind is None:
            raise refusals.missing(f"{at}.type")
        kind = checks.one_of(kind, f"{at}.type", ITEM_TYPES)
        if kind == "item_reference":
            if earlier is None:
                earlier = {entry["id"]: entry for entry in history if isinstance(entry.get("id"), str)}
            ref = checks.string(item.get("id"), f"{at}.id")
            if ref not in earlier:
                raise InvalidRequest(f"Item with id '{ref}' not found.", param=f"{at}.id", code="invalid_value")
            out.append(earlier[ref])
            continue
        given = item.get("id")
        item_id = given if type(given) is str and given else f"in_{request_id}_{n}"
        out.append(_NORMALISERS[kind](item, item_id, at))
    return out


def string_input(text: str, request_id: str) -> dict[str, Any]:
    """The one item of a string input: a user message (_message_item's, made in one step)."""
    return {
        "id": f"in_{request_id}_0",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def _message(item: dict[str, Any], item_id: str, at: str) -> dict[str, Any]:
    if "role" not in item:
        raise refusals.missing(f"{at}.role")
    role = checks.one_of(item["role"], f"{at}.role", ROLES)
    content = item.get("content")
    if content is None:
        raise refusals.missing(f"{at}.content")
    assistant = role == "assistant"
    if type(content) is str:
        parts = [{"type": "output_text", "text": content, "annotations": []} if assistant else _text(content)]
        return _message_item(item_id, role, parts)
    checks.array(content, f"{at}.content")
    allowed = ASSISTANT_PARTS if assistant else INPUT_PARTS if role == "user" else _TEXT_ONLY
    parts = []
    for i, part in enumerate(content):
        where = f"{at}.content[{i}]"
        checks.obj(part, where)
        kind = checks.kind_of(part, where, allowed)
        # What the assistant said is output text, however the client labelled it.
        parts.append(_part(part, "output_text" if assistant and kind == "input_text" else kind, where))
    return _message_item(item_id, role, parts)


def _message_item(item_id: str, role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": role, "status": "completed", "content": parts}


def _text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _part(part: dict[str, Any], kind: str, at: str) -> dict[str, Any]:
    if kind == "input_text":
        return _text(checks.string(part.get("text"), f"{at}.text"))
    if kind == "output_text":
        return {"type": "output_text", "text": checks.string(part.get("text"), f"{at}.text"), "annotations": []}
    if kind == "refusal":
        return {"type": "refusal", "refusal": checks.string(part.get("refusal"), f"{at}.refusal")}
    if kind == "input_image":
        detail = part.get("detail")
        out: dict[str, Any] = {
            "type": "input_image",
            "detail": "auto" if detail is None else checks.one_of(detail, f"{at}.detail", IMAGE_DETAILS),
        }
        _source(part, out, at, ("image_url", "file_id"))
        return out
    out = {"type": "input_file"}
    if part.get("file_url") is not None and part.get("file_id") is None and part.get("file_data") is None:
        raise checks.unsupported(f"{at}.file_url", "a file by URL cannot be sent in a chat request; send file_data.")
    _source(part, out, at, ("file_id", "file_data"))
    if "file_data" in out:  # chat's file part needs a name beside inline data
        filename = part.get("filename")
        out["filename"] = "file" if filename is None else checks.string(filename, f"{at}.filename", non_empty=True)
    return out


def _source(part: dict[str, Any], out: dict[str, Any], at: str, fields: tuple[str, ...]) -> None:
    """The one field that says where an image or file is (a URL, a file id, inline data)."""
    for name in fields:
        value = part.get(name)
        if value is not None:
            out[name] = checks.string(value, f"{at}.{name}", non_empty=True)
            return
    raise refusals.missing(f"{at}.{fields[0]}")


def _function_call(item: dict[str, Any], item_id: str, at: str) -> dict[str, Any]:
    for name in ("call_id", "name", "arguments"):
        if item.get(name) is None:
            raise refusals.missing(f"{at}.{name}")
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": checks.string(item["call_id"], f"{at}.call_id", non_empty=True),
        "name": checks.string(item["name"], f"{at}.name", non_empty=True),
        "arguments": checks.string(item["arguments"], f"{at}.arguments"),
    }


def _function_call_output(item: dict[str, Any], item_id: str, at: str) -> dict[str, Any]:
    if item.get("call_id") is None:
        raise refusals.missing(f"{at}.call_id")
    call_id = checks.string(item["call_id"], f"{at}.call_id", non_empty=True)
    output = item.get("output")
    if output is None:
        raise refusals.missing(f"{at}.output")
    if type(output) is not str:
        checks.array(output, f"{at}.output")
        parts = []
        for i, part in enumerate(output):
            where = f"{at}.output[{i}]"
            checks.obj(part, where)
            parts.append(_part(part, checks.kind_of(part, where, INPUT_PARTS), where))
        output = parts
    return {"id": item_id, "type": "function_call_output", "status": "completed", "call_id": call_id, "output": output}


def _reasoning(item: dict[str, Any], item_id: str, at: str) -> dict[str, Any]:
    """Kept for input_items.list (its encrypted content is for OpenAI only); no chat message comes of it."""
    summary = item.get("summary")
    out: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [] if summary is None else _texts(summary, f"{at}.summary", "summary_text"),
    }
    if item.get("content") is not None:
        out["content"] = _texts(item["content"], f"{at}.content", "reasoning_text")
    if item.get("encrypted_content") is not None:
        out["encrypted_content"] = checks.string(item["encrypted_content"], f"{at}.encrypted_content")
    return out


def _texts(value: Any, at: str, kind: str) -> list[dict[str, Any]]:
    """A reasoning item's summary or content: text parts of one kind."""
    out = []
    for i, part in enumerate(checks.array(value, at)):
        where = f"{at}[{i}]"
        checks.kind_of(checks.obj(part, where), where, (kind,))
        out.append({"type": kind, "text": checks.string(part.get("text"), f"{where}.text")})
    return out


_NORMALISERS = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
}


# -- chat messages ---------------------------------------------------------------------------------------------


def items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for normalised items (this turn's, or an earlier turn's input and output)."""
    messages: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []  # images and files of tool outputs, for the user message after the tool run
    for item in items:
        kind = item.get("type")
        if held and kind != "function_call_output":
            messages.append({"role": "user", "content": held})
            held = []
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last["content"]:
                    last["content"] = None  # tool calls alone: OpenAI's own shape
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            if type(output) is not str:
                texts = [part["text"] for part in output if part["type"] == "input_text"]
                held.extend(_chat_part(part) for part in output if part["type"] != "input_text")
                output = "\n".join(texts)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        # reasoning and any other item: nothing the chat format can carry
    if held:
        messages.append({"role": "user", "content": held})
    return messages


def _chat_message(item: dict[str, Any]) -> dict[str, Any]:
    role = item["role"]
    parts = item["content"]
    if role == "assistant":
        # A refusal is what the assistant said: as text, which every provider can replay.
        texts = [part.get("text") or part.get("refusal") or "" for part in parts]
        return {"role": "assistant", "content": "".join(texts)}
    if role != "user":  # system, developer: text only (normalise_input saw to it)
        return {"role": "system", "content": "\n".join(part["text"] for part in parts)}
    if len(parts) == 1 and parts[0]["type"] == "input_text":
        return {"role": "user", "content": parts[0]["text"]}  # a plain string: what every server accepts
    return {"role": "user", "content": [_chat_part(part) for part in parts]}


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind == "input_text":
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        if "image_url" in part:
            detail = "high" if part["detail"] == "original" else part["detail"]  # chat has no "original"
            return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": detail}}
        return {"type": "file", "file": {"file_id": part["file_id"]}}  # an uploaded image: OpenAI's upstream only
    if "file_id" in part:
        return {"type": "file", "file": {"file_id": part["file_id"]}}
    return {"type": "file", "file": {"file_data": part["file_data"], "filename": part["filename"]}}
