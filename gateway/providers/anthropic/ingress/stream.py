"""OpenAI chat chunks in, Anthropic Messages stream events out: the relay's encoder for POST /v1/messages.

Anthropic's stream is a sequence of typed events: message_start, then for each content block (text, tool_use)
content_block_start, its deltas and content_block_stop, then message_delta (stop reason, usage) and
message_stop. OpenAI's chunks carry the same content as deltas of one message, so the encoder keeps the state
that turns one into the other: which block is open and which block each tool call went to.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import Usage
from gateway.errors import GatewayError
from gateway.providers.anthropic.ingress.answer import ERROR_TYPES, STOP_REASONS, error_json, usage_json
from gateway.providers.chunks import ChunkEncoder


def event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicEncoder(ChunkEncoder):
    """One per stream. Implements gateway.api.streaming.Encoder (its `chunk` is ChunkEncoder's)."""

    __slots__ = (
        "message_id",
        "model",
        "request_id",
        "started",
        "index",
        "open",
        "tools",
        "open_tool",
        "stop",
        "usage",
        "done",
    )

    def __init__(self, message_id: str, model: str, request_id: str = "") -> None:
        self.message_id = message_id
        self.model = model
        self.request_id = request_id
        self.started = False
        self.index = -1  # the index of the last block started
        self.open = ""  # the kind of the open block: "text", "tool", or "" when none is open
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.open_tool = -1  # the OpenAI index of the open tool block
        self.stop: str | None = None
        self.usage: Usage | None = None
        self.done = False  # ended or failed: nothing more is sent

    # -- ChunkEncoder's hooks ---------------------------------------------------------------------------------

    def begin(self, model: Any, out: list[bytes]) -> None:
        out.append(self._start(model))

    def text(self, text: str, out: list[bytes]) -> None:
        self._text(text, out)

    def refusal(self, text: str, out: list[bytes]) -> None:
        self._text(text, out)
        self.stop = "refusal"

    def tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        self._tool(call, out)

    def finished(self, reason: str) -> None:
        if self.stop != "refusal":
            self.stop = STOP_REASONS.get(reason, "end_turn")

    def upstream_failed(self, error: dict[str, Any]) -> bytes:
        kind = error.get("type")
        message = error.get("message")
        # An upstream that speaks Anthropic's error types (overloaded_error...) keeps its own.
        return self._fail(
            502,
            message if isinstance(message, str) and message else "The upstream stream failed.",
            kind if isinstance(kind, str) and kind in ERROR_TYPES else None,
        )

    # -- the rest of the Encoder protocol ----------------------------------------------------------------------

    def error(self, exc: GatewayError) -> bytes:
        return self._fail(exc.status_code, exc.message, None)

    def end(self) -> bytes:
        if self.done:
            return b""  # after an error event the stream just ends, as Anthropic's does
        self.done = True
        out: list[bytes] = []
        if not self.started:
            out.append(self._start(None))
        self._close(out)
        usage: dict[str, int] = usage_json(self.usage) if self.usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self.stop or "end_turn", "stop_sequence": None}
        out.append(event(b"message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(event(b"message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _start(self, model: Any) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) and model else self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Known only at the end, from the upstream's usage chunk: message_delta carries the real counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event(b"message_start", {"type": "message_start", "message": message})

    def _text(self, text: str, out: list[bytes]) -> None:
        if self.open != "text":
            self._close(out)
            self.index += 1
            self.open = "text"
            block = {"type": "text", "text": ""}
            out.append(
                event(
                    b"content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}
                )
            )
        delta = {"type": "text_delta", "text": text}
        out.append(event(b"content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index")
        if not isinstance(position, int):
            # Some OpenAI-compatible servers leave out the index: a call with an id starts a new tool call.
            position = len(self.tools) if call.get("id") else self.open_tool
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        block = self.tools.get(position)
        if block is None:
            self._close(out)
            self.index += 1
            block = self.tools[position] = self.index
            self.open = "tool"
            self.open_tool = position
            call_id = call.get("id")
            name = function.get("name")
            start = {
                "type": "tool_use",
                "id": call_id if isinstance(call_id, str) and call_id else f"toolu_{self.message_id}_{position}",
                "name": name if isinstance(name, str) else "",
                "input": {},
            }
            out.append(
                event(b"content_block_start", {"type": "content_block_start", "index": block, "content_block": start})
            )
        # Arguments for an earlier, already closed call (an upstream that interleaves parallel calls, which
        # OpenAI does not) still go to that call's index: Anthropic's SDKs accumulate deltas by index.
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(event(b"content_block_delta", {"type": "content_block_delta", "index": block, "delta": delta}))

    def _close(self, out: list[bytes]) -> None:
        if self.open:
            out.append(event(b"content_block_stop", {"type": "content_block_stop", "index": self.index}))
            self.open = ""

    def _fail(self, status: int, message: str, kind: str | None) -> bytes:
        if self.done:
            return b""
        self.done = True
        return b"event: error\ndata: " + error_json(status, message, self.request_id, kind) + b"\n\n"
