"""Server-sent events: split a byte stream into `data:` payloads, and frame payloads for the client."""

from __future__ import annotations

DONE = b"[DONE]"


class SSEDecoder:
    """Feeds on arbitrary byte chunks; returns the `data:` payload of each complete event."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        payloads = []
        for event in events:
            payload = _data_of(event)
            if payload is not None:
                payloads.append(payload)
        return payloads

    def flush(self) -> list[bytes]:
        """What is left when the stream ends without a final blank line."""
        rest, self._buffer = self._buffer, b""
        payload = _data_of(rest.strip(b"\n"))
        return [payload] if payload is not None else []


def _data_of(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:  # the common case: one data line
        return event[6:] if event[5:6] == b" " else event[5:]
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None  # comments, keep-alives, `event:` without data
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE_FRAME = frame(DONE)
