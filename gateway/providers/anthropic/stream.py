"""Anthropic's stream events in, OpenAI `chat.completion.chunk` payloads out."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.providers.anthropic.errors import openai_error
from gateway.providers.anthropic.translate import finish_reason, openai_usage, usage_of
from gateway.providers.base import FeedsPayloads
from gateway.providers.sse import json_object


class StreamTranslator(FeedsPayloads):
    """Anthropic's stream events in, OpenAI `chat.completion.chunk` payloads out.

    Anthropic numbers content blocks (text, tool_use, thinking...); OpenAI has one content string and numbered
    tool calls. Text deltas become content, each tool_use block a tool call with its own index (id and name in
    its first delta, argument fragments after), the answer tool's JSON becomes content, and thinking is dropped:
    OpenAI's chat format has no place for it. The finish chunk and the usage chunk go out at message_stop.
    """

    __slots__ = (
        "model",
        "usage",
        "done",
        "failed",
        "stopped",
        "_created",
        "_answer_tool",
        "_head",
        "_counts",
        "_stop",
        "_tools",
        "_answer_blocks",
    )

    def __init__(self, model: str, created: int, answer_tool: str | None) -> None:
        self.model = model
        self._created = created
        self._answer_tool = answer_tool
        self.usage = usage_of({})
        self.done = False
        self.failed = False
        self.stopped = False  # done or failed: nothing more to read
        self._head = self._chunk_head("")
        self._counts: dict[str, Any] = {}  # Anthropic's usage fields, the latest value of each
        self._stop: Any = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._answer_blocks: set[int] = set()

    @property
    def missing(self) -> str:
        return "" if self.done else "its message_stop event"

    def finish(self) -> list[bytes]:
        return []  # the finish and usage chunks went out at message_stop

    def _chunk_head(self, message_id: str) -> bytes:
        # Every chunk starts alike: serialise that once, then only each choice per event.
        head = {"id": message_id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        return orjson.dumps(head)[:-1] + b',"choices":['

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._head + orjson.dumps({"index": 0, "delta": delta, "finish_reason": finish}) + b"]}"

    def feed(self, payload: bytes) -> list[bytes]:
        event = json_object(payload)
        if event is None:
            return []
        kind = event.get("type")
        if kind == "content_block_delta":  # by far the most frequent: first
            return self._block_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            return self._message_start(event.get("message"))
        if kind == "message_delta":
            self._message_delta(event)
        elif kind == "message_stop":
            return self._message_stop()
        elif kind == "error":
            self.failed = self.stopped = True
            return [orjson.dumps({"error": openai_error(event.get("error"))})]
        # ping, content_block_stop and event types added later carry nothing for the client
        return []

    def _message_start(self, message: Any) -> list[bytes]:
        message = message if isinstance(message, dict) else {}
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        self._head = self._chunk_head(message.get("id") if isinstance(message.get("id"), str) else "")
        self._merge_usage(message.get("usage"))
        return [self._delta({"role": "assistant", "content": ""})]

    def _block_start(self, event: dict[str, Any]) -> list[bytes]:
        block = event.get("content_block")
        index = event.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return []
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [self._delta({"content": block["text"]})]
        if kind != "tool_use":
            return []  # thinking, redacted thinking, server tools: nothing for OpenAI's chat format
        if self._answer_tool is not None and block.get("name") == self._answer_tool:
            self._answer_blocks.add(index)
            return []
        position = self._tools[index] = len(self._tools)
        function = {"name": block.get("name"), "arguments": ""}
        call = {"index": position, "id": block.get("id"), "type": "function", "function": function}
        return [self._delta({"tool_calls": [call]})]

    def _block_delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [self._delta({"content": text})] if isinstance(text, str) and text else []
        if kind != "input_json_delta":
            return []  # thinking_delta, signature_delta, citations_delta
        fragment = delta.get("partial_json")
        index = event.get("index")
        if not isinstance(fragment, str) or not fragment or not isinstance(index, int):
            return []
        if index in self._answer_blocks:
            return [self._delta({"content": fragment})]
        position = self._tools.get(index)
        if position is None:
            return []  # a server tool's input: not the client's to see
        return [self._delta({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})]

    def _message_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop = delta["stop_reason"]
        self._merge_usage(event.get("usage"))

    def _merge_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative and may repeat or omit message_start's: the latest value wins.
        if isinstance(usage, dict):
            self._counts.update((k, v) for k, v in usage.items() if v is not None)
            self.usage = usage_of(self._counts)

    def _message_stop(self) -> list[bytes]:
        self.done = self.stopped = True
        finish = self._delta({}, finish_reason(self._stop, bool(self._tools)))
        # Always sent, as an upstream asked for stream_options.include_usage: the relay strips it when the
        # client did not ask.
        usage = self._head + b'],"usage":' + orjson.dumps(openai_usage(self.usage)) + b"}"
        return [finish, usage]
