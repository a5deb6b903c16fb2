"""Gemini's stream: its framing, and its GenerateContentResponse events in, OpenAI `chat.completion.chunk`
payloads out."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from gateway.context import Usage
from gateway.providers.base import FeedsPayloads
from gateway.providers.gemini.errors import openai_error
from gateway.providers.gemini.translate import content_of, finish_reason, openai_usage, prompt_block, usage_of
from gateway.providers.sse import SSEDecoder


def event_decoder() -> SSEDecoder:
    """Gemini's stream framing: SSE `data:` payloads, and the bare JSON error object Google appends, without
    `data:`, to a stream that fails midway."""
    return SSEDecoder(bare_json=True)


class StreamTranslator(FeedsPayloads):
    """GenerateContentResponse events in, OpenAI `chat.completion.chunk` payloads out.

    Each candidate is a choice: a role chunk when it first appears, its text as content deltas, and each function
    call whole, in one tool call delta with its own index. Finish chunks wait for the end of the stream: older
    models repeat finishReason on every event. Then a usage chunk from the last usageMetadata, always, as an
    upstream asked for stream_options.include_usage: the relay strips it when the client did not ask.
    """

    __slots__ = ("model", "usage", "failed", "stopped", "_created", "_token", "_head", "_finish", "_tools", "_counter")

    def __init__(self, model: str, created: int, token: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.failed = False
        self.stopped = False  # failed: nothing more to read (Gemini ends a whole answer by closing the stream)
        self._created = created
        self._token = token
        self._head = b""
        self._finish: dict[int, Any] = {}  # choice index -> the latest finishReason
        self._tools: dict[int, int] = {}  # choice index -> tool calls so far; a key once the choice has begun
        self._counter = itertools.count()

    @property
    def complete(self) -> bool:
        return bool(self._finish)

    @property
    def missing(self) -> str:
        # Gemini ends a stream by closing it; only a finishReason tells a whole answer from a cut one.
        return "" if self._finish else "a finishReason"

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._head + orjson.dumps({"index": index, "delta": delta, "finish_reason": finish}) + b"]}"

    def feed(self, payload: bytes) -> list[bytes]:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if isinstance(event, list) and event:  # an error object wrapped in an array, as Google sometimes does
            event = event[0]
        if not isinstance(event, dict):
            return []
        if "error" in event:
            self.failed = self.stopped = True
            _, info, _ = openai_error(event["error"], 502)
            return [orjson.dumps({"error": info})]
        if not self._head:
            self._start(event)
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = usage_of(event["usageMetadata"])
        block = prompt_block(event)
        if block is not None:
            self.failed = self.stopped = True
            info = {
                "message": block,
                "type": "invalid_request_error",
                "param": None,
                "code": "content_policy_violation",
            }
            return [orjson.dumps({"error": info})]
        out: list[bytes] = []
        for position, candidate in enumerate(event.get("candidates") or []):
            if isinstance(candidate, dict):
                out += self._candidate(candidate, position)
        return out

    def _start(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("modelVersion"), str) and event["modelVersion"]:
            self.model = event["modelVersion"]
        answer_id = event.get("responseId") or f"chatcmpl-{self._token}"
        head = {"id": answer_id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        # Every chunk starts alike: serialise that once, then only each choice per event.
        self._head = orjson.dumps(head)[:-1] + b',"choices":['

    def _candidate(self, candidate: dict[str, Any], position: int) -> list[bytes]:
        index = candidate.get("index", position)
        index = index if isinstance(index, int) else position
        out: list[bytes] = []
        if index not in self._tools:
            self._tools[index] = 0
            out.append(self._delta(index, {"role": "assistant", "content": ""}))
        text, calls = content_of(candidate, f"call_{self._token}_", self._counter)
        if text:
            out.append(self._delta(index, {"content": text}))
        if calls:
            for call in calls:
                call["index"] = self._tools[index]
                self._tools[index] += 1
            out.append(self._delta(index, {"tool_calls": calls}))
        if candidate.get("finishReason"):
            self._finish[index] = candidate["finishReason"]
        return out

    def finish(self) -> list[bytes]:
        """The finish chunk of every choice, then the usage chunk (when Gemini sent usage)."""
        out = [
            self._delta(i, {}, finish_reason(reason, self._tools.get(i, 0) > 0)) for i, reason in self._finish.items()
        ]
        if self.usage is not None:
            out.append(self._head + b'],"usage":' + orjson.dumps(openai_usage(self.usage)) + b"}")
        return out
