"""A Responses request served in the Responses API itself, by a provider that speaks it (`responses_api: true`).

The pipeline's view stays the chat format: the request's filters saw its chat translation, and what comes back is
given to them as a chat completion or chat chunks, so that usage, the record, guardrails on the answer and the
stream's hold-back work as for any answer. What the upstream sent is kept beside (NativeRequest.answer): the
ingress sends a whole answer as it came, with the items a chat answer has no place for (reasoning), when no filter
changed it. A stream is translated into chat chunks and back into the Responses events by the ingress's encoder.

The upstream gets the client's body with the conversation inlined: the turns previous_response_id brought (the
gateway keeps conversations, so that any deployment can serve the next turn), then this turn's items, without
their ids (an id asks the upstream for an item it stored, and it stores nothing: `store` is false).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import Usage
from gateway.providers.base import FeedsPayloads
from gateway.providers.sse import json_object

# The client's fields the upstream does not get: the gateway keeps the conversation, and says whether to keep it.
_GATEWAYS = ("previous_response_id", "store", "stream_options")
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def native_body(body: dict[str, Any], conversation: list[dict[str, Any]]) -> dict[str, Any]:
    """The upstream's body: the client's, its input the whole conversation (items without ids), nothing stored."""
    out = {k: v for k, v in body.items() if k not in _GATEWAYS}
    out["input"] = [{k: v for k, v in item.items() if k != "id"} for item in conversation]
    out["store"] = False
    return out


def as_served(answer: dict[str, Any], request: dict[str, Any], *, response_id: str) -> dict[str, Any]:
    """The upstream's Response as the client gets it: the gateway's id, and what the client asked of the gateway
    (previous_response_id, store, metadata) in place of what the upstream was sent."""
    out = dict(answer)
    out["id"] = response_id
    out["previous_response_id"] = request.get("previous_response_id")
    store = request.get("store")
    out["store"] = True if store is None else store
    out["metadata"] = request.get("metadata") or {}
    return out


def usage_of(usage: Any) -> Usage | None:
    """Responses' usage as the gateway's."""
    if not isinstance(usage, dict):
        return None
    inputs = usage.get("input_tokens_details")
    outputs = usage.get("output_tokens_details")
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")),
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=_count(inputs.get("cached_tokens")) if isinstance(inputs, dict) else 0,
        reasoning_tokens=_count(outputs.get("reasoning_tokens")) if isinstance(outputs, dict) else 0,
    )


def _count(value: Any) -> int:
    """A token count an upstream sent: a non-negative integer, or nothing (0)."""
    return value if type(value) is int and value >= 0 else 0


def to_chat(response: dict[str, Any]) -> dict[str, Any]:
    """A whole Response as the chat completion the pipeline reads: its text, refusal and function calls."""
    text: list[str] = []
    refusal: list[str] = []
    calls: list[dict[str, Any]] = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusal.append(str(part.get("refusal") or ""))
        elif item.get("type") == "function_call":
            calls.append(_call(item))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if refusal:
        message["refusal"] = "".join(refusal)
    if calls:
        message["tool_calls"] = calls
    chat: dict[str, Any] = {
        "id": str(response.get("id") or ""),
        "object": "chat.completion",
        "created": _count(response.get("created_at")),
        "model": str(response.get("model") or ""),
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(response, bool(calls))}],
    }
    usage = usage_of(response.get("usage"))
    if usage is not None:
        chat["usage"] = _chat_usage(usage)
    return chat


def _call(item: dict[str, Any]) -> dict[str, Any]:
    name = item.get("name")
    arguments = item.get("arguments")
    return {
        "id": str(item.get("call_id") or item.get("id") or ""),
        "type": "function",
        "function": {
            "name": name if isinstance(name, str) else "",
            "arguments": arguments if isinstance(arguments, str) else "",
        },
    }


def _finish(response: dict[str, Any], calls: bool) -> str:
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" and isinstance(details, dict):
        return _INCOMPLETE.get(str(details.get("reason")), "length")
    return "tool_calls" if calls else "stop"


def _chat_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChatFromResponses(FeedsPayloads):
    """Responses stream events in, chat chunk payloads out (a StreamTranslator, gateway/providers/base.py)."""

    __slots__ = ("model", "usage", "failed", "stopped", "calls", "finish_reason")

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.failed = False
        self.stopped = False
        self.calls: dict[str, int] = {}  # the upstream's item id of a function call -> its chat tool call index
        self.finish_reason = "stop"

    @property
    def missing(self) -> str:
        return "" if self.stopped else "its response.completed event"

    def feed(self, payload: bytes) -> list[bytes]:
        event = json_object(payload)
        if event is None:
            return []
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return [self._chunk({"content": str(event.get("delta") or "")})]
        if kind == "response.refusal.delta":
            return [self._chunk({"refusal": str(event.get("delta") or "")})]
        if kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                index = self.calls[str(item.get("id"))] = len(self.calls)
                self.finish_reason = "tool_calls"
                call = {"index": index, **_call(item)}
                call["function"]["arguments"] = ""
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "response.function_call_arguments.delta":
            position = self.calls.get(str(event.get("item_id")))
            if position is None:
                return []
            delta = {"index": position, "function": {"arguments": str(event.get("delta") or "")}}
            return [self._chunk({"tool_calls": [delta]})]
        if kind in ("response.created", "response.in_progress"):
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("model"), str):
                self.model = response["model"]
            return []
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            response = response if isinstance(response, dict) else {}
            self.stopped = True
            self.usage = usage_of(response.get("usage"))
            out = [self._chunk({}, _finish(response, self.finish_reason == "tool_calls"))]
            if self.usage is not None:
                out.append(orjson.dumps({"object": "chat.completion.chunk", "model": self.model, "choices": [],
                                         "usage": _chat_usage(self.usage)}))  # fmt: skip
            return out
        if kind in ("response.failed", "error"):
            self.failed = self.stopped = True
            response = event.get("response")
            error = response.get("error") if isinstance(response, dict) else event
            error = error if isinstance(error, dict) else {}
            message = error.get("message")
            said = message if isinstance(message, str) and message else "The upstream response failed."
            return [orjson.dumps({"error": {"message": said, "type": "upstream_error", "code": error.get("code")}})]
        return []  # reasoning summaries, hosted tools' progress...: nothing a chat chunk carries

    def finish(self) -> list[bytes]:
        return []  # response.completed gave the finish and usage chunks

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return orjson.dumps({"object": "chat.completion.chunk", "model": self.model, "choices": [choice]})
