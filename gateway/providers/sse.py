"""Server-sent events: split a byte stream into `data:` payloads, and frame payloads for the client."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"


def json_object(payload: bytes) -> dict[str, Any] | None:
    """A payload's JSON object; None for anything else (broken JSON, an array, a scalar), which a stream skips."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class SSEDecoder:
    """Feeds on arbitrary byte chunks; returns the `data:` payload of each complete event.

    An event without `data:` lines (a comment, a keep-alive, `event:` alone) is skipped, as the SSE standard says.
    With `bare_json`, such an event whose text is a JSON object or array is a payload too: Google appends its error
    object, without `data:`, to a Gemini stream that fails midway.
    """

    __slots__ = ("_buffer", "_bare_json")

    def __init__(self, *, bare_json: bool = False) -> None:
        self._buffer = b""
        self._bare_json = bare_json

    def feed(self, chunk: bytes) -> list[bytes]:
        # find(), not `in`: bytes' `in` first tries its operand as an int, and raises and clears a TypeError.
        if chunk.find(b"\r") >= 0:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        payloads = []
        for event in events:
            payload = _data_of(event)
            if payload is not None or (self._bare_json and (payload := _json_of(event)) is not None):
                payloads.append(payload)
        return payloads

    def flush(self) -> list[bytes]:
        """What is left when the stream ends without a final blank line."""
        rest, self._buffer = self._buffer, b""
        rest = rest.strip(b"\n")
        payload = _data_of(rest)
        if payload is None and self._bare_json:
            payload = _json_of(rest)
        return [payload] if payload is not None else []


def _data_of(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and event.find(b"\n") < 0:  # the common case: one data line
        return event[6:] if event[5:6] == b" " else event[5:]
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None  # comments, keep-alives, `event:` without data
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


def _json_of(event: bytes) -> bytes | None:
    stripped = event.strip()
    return stripped if stripped.startswith((b"{", b"[")) else None


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE_FRAME = frame(DONE)
