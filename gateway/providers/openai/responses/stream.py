"""Chat chunks in, Responses stream events out: the relay's encoder for POST /v1/responses with stream: true.

A Responses stream is a sequence of typed events, each with a sequence_number counted from 0: response.created
and response.in_progress, then for each output item its output_item.added, its content (content_part.added,
output_text or refusal deltas, their .done, content_part.done; or function_call_arguments deltas and .done) and
its output_item.done, then response.completed (response.incomplete when the answer was cut short) with the whole
Response. A chat stream carries the same content as deltas of one message, so the encoder keeps what turns one
into the other: the output items, which of them each delta goes to, and their text so far.

Items stay open until the stream ends and are closed then in output order: an upstream that interleaves the
arguments of parallel tool calls (OpenAI does not) still gets each call's whole arguments into its .done event.
A failure (the relay's error, an upstream error chunk) ends the stream with response.failed, whose response
carries the error as the openai SDK reads it; nothing follows it, not even `[DONE]`, which a Responses stream
never sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.context import Usage
from gateway.errors import GatewayError
from gateway.providers.chunks import ChunkEncoder
from gateway.providers.openai.responses.answer import INCOMPLETE_REASONS, error_json, output_text, response_object

_PARTS = {"output_text": output_text(""), "refusal": {"type": "refusal", "refusal": ""}}


class _Message:
    __slots__ = ("index", "item_id", "parts")

    def __init__(self, index: int, item_id: str) -> None:
        self.index = index
        self.item_id = item_id
        self.parts: list[tuple[str, list[str]]] = []  # (output_text | refusal, its text so far)


class _Call:
    __slots__ = ("index", "item_id", "call_id", "name", "arguments")

    def __init__(self, index: int, item_id: str, call_id: str, name: str) -> None:
        self.index = index
        self.item_id = item_id
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []


class ResponsesEncoder(ChunkEncoder):
    """One per stream. Implements gateway.api.streaming.Encoder. `on_complete` gets the final Response once, when
    the stream ended with response.completed or response.incomplete (never after response.failed)."""

    __slots__ = (
        "request",
        "request_id",
        "model",
        "created_at",
        "on_complete",
        "sequence",
        "started",
        "done",
        "items",
        "message",
        "calls",
        "last_call",
        "finish",
        "usage",
    )

    def __init__(
        self,
        request: dict[str, Any],
        *,
        request_id: str,
        model: str,
        created_at: float,
        on_complete: Callable[[dict[str, Any]], None],
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.model = model
        self.created_at = created_at
        self.on_complete = on_complete
        self.sequence = 0
        self.started = False
        self.done = False  # completed or failed: nothing more is sent
        self.items: list[_Message | _Call] = []  # in output order
        self.message: _Message | None = None
        self.calls: dict[int, _Call] = {}  # chat tool call index -> its item
        self.last_call = -1
        self.finish: str | None = None
        self.usage: Usage | None = None

    # -- ChunkEncoder's hooks ---------------------------------------------------------------------------------

    def begin(self, model: Any, out: list[bytes]) -> None:
        self._start(model, out)

    def text(self, text: str, out: list[bytes]) -> None:
        self._text("output_text", text, out)

    def refusal(self, text: str, out: list[bytes]) -> None:
        self._text("refusal", text, out)

    def tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        self._tool(call, out)

    def finished(self, reason: str) -> None:
        self.finish = reason

    def upstream_failed(self, error: dict[str, Any]) -> bytes:
        message = error.get("message")
        # The codes of a failed response are few: an upstream's rate limit is one of them, the rest is the server's.
        limited = "rate_limit" in f"{error.get('type')} {error.get('code')}"
        said = message if isinstance(message, str) and message else "The upstream stream failed."
        return self._fail(error_json(429 if limited else 502, said))

    # -- the rest of the Encoder protocol ----------------------------------------------------------------------

    def error(self, exc: GatewayError) -> bytes:
        return self._fail(error_json(exc.status_code, exc.message))

    def end(self) -> bytes:
        if self.done:
            return b""  # after response.failed the stream just ends, as OpenAI's does
        self.done = True
        out: list[bytes] = []
        if not self.started:
            self._start(None, out)
        if not self.items:  # an answer with nothing in it still has its (empty) message, as a whole answer has
            self._part(self._open_message(out), "output_text", out)
        reason = INCOMPLETE_REASONS.get(self.finish) if self.finish else None
        status = "incomplete" if reason else "completed"
        output = [self._close(item, status, out) for item in self.items]
        response = self._response(status, output, self.usage, incomplete_details={"reason": reason} if reason else None)
        out.append(self._event("response.incomplete" if reason else "response.completed", {"response": response}))
        self.on_complete(response)
        return b"".join(out)

    # -- events ------------------------------------------------------------------------------------------------

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _response(self, status: str, output: list[dict[str, Any]], usage: Usage | None, **extra: Any) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=f"resp_{self.request_id}",
            model=self.model,
            created_at=self.created_at,
            status=status,
            output=output,
            usage=usage,
            **extra,
        )

    def _start(self, model: Any, out: list[bytes]) -> None:
        self.started = True
        if isinstance(model, str) and model:
            self.model = model  # what the upstream says serves it, as a whole answer reports
        response = self._response("in_progress", [], None)
        out.append(self._event("response.created", {"response": response}))
        out.append(self._event("response.in_progress", {"response": response}))

    def _open_message(self, out: list[bytes]) -> _Message:
        # One message per answer, as in a whole answer: text after tool calls still goes to it.
        message = self.message = _Message(len(self.items), f"msg_{self.request_id}")
        self.items.append(message)
        item = {"id": message.item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        out.append(self._event("response.output_item.added", {"output_index": message.index, "item": item}))
        return message

    def _part(self, message: _Message, kind: str, out: list[bytes]) -> int:
        """The content index of the message's part of this kind, added now if it has none."""
        for i, (existing, _) in enumerate(message.parts):
            if existing == kind:
                return i
        message.parts.append((kind, []))
        index = len(message.parts) - 1
        fields = {"item_id": message.item_id, "output_index": message.index, "content_index": index}
        out.append(self._event("response.content_part.added", {**fields, "part": _PARTS[kind]}))
        return index

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        message = self.message or self._open_message(out)
        index = self._part(message, kind, out)
        message.parts[index][1].append(text)
        fields: dict[str, Any] = {"item_id": message.item_id, "output_index": message.index, "content_index": index}
        if kind == "output_text":
            out.append(self._event("response.output_text.delta", {**fields, "delta": text, "logprobs": []}))
        else:
            out.append(self._event("response.refusal.delta", {**fields, "delta": text}))

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index")
        if not isinstance(position, int):
            # Some OpenAI-compatible servers leave out the index: a call with an id starts a new tool call.
            position = len(self.calls) if call.get("id") else self.last_call
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        item = self.calls.get(position)
        if item is None:
            n = len(self.calls)  # the call's position in the answer, as a whole answer numbers it
            call_id = call.get("id")
            name = function.get("name")
            item = self.calls[position] = _Call(
                len(self.items),
                f"fc_{self.request_id}_{n}",
                call_id if isinstance(call_id, str) and call_id else f"call_{self.request_id}_{n}",
                name if isinstance(name, str) else "",
            )
            self.items.append(item)
            self.last_call = position
            added = {
                "id": item.item_id,
                "type": "function_call",
                "status": "in_progress",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": "",
            }
            out.append(self._event("response.output_item.added", {"output_index": item.index, "item": added}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.arguments.append(arguments)
            fields = {"item_id": item.item_id, "output_index": item.index, "delta": arguments}
            out.append(self._event("response.function_call_arguments.delta", fields))

    def _close(self, item: _Message | _Call, status: str, out: list[bytes]) -> dict[str, Any]:
        """The done events of an item; its final shape, for the Response."""
        done = self._item(item, status)
        if isinstance(item, _Call):
            fields = {"item_id": item.item_id, "output_index": item.index, "arguments": done["arguments"]}
            out.append(self._event("response.function_call_arguments.done", fields))
        else:
            for index, part in enumerate(done["content"]):
                at = {"item_id": item.item_id, "output_index": item.index, "content_index": index}
                if part["type"] == "output_text":
                    out.append(self._event("response.output_text.done", {**at, "text": part["text"], "logprobs": []}))
                else:
                    out.append(self._event("response.refusal.done", {**at, "refusal": part["refusal"]}))
                out.append(self._event("response.content_part.done", {**at, "part": part}))
        out.append(self._event("response.output_item.done", {"output_index": item.index, "item": done}))
        return done

    def _item(self, item: _Message | _Call, status: str) -> dict[str, Any]:
        if isinstance(item, _Call):
            return {
                "id": item.item_id,
                "type": "function_call",
                "status": "completed",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": "".join(item.arguments),
            }
        parts = [
            output_text("".join(texts)) if kind == "output_text" else {"type": "refusal", "refusal": "".join(texts)}
            for kind, texts in item.parts
        ]
        return {"id": item.item_id, "type": "message", "role": "assistant", "status": status, "content": parts}

    def _fail(self, error: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        self.done = True
        out: list[bytes] = []
        if not self.started:
            self._start(None, out)
        output = [self._item(item, "incomplete") for item in self.items]  # what came before the failure
        response = self._response("failed", output, self.usage, error=error)
        out.append(self._event("response.failed", {"response": response}))
        return b"".join(out)
