"""Answers to HTTP/1.0 requests: never chunked.

uvicorn frames an answer that has no content-length with `transfer-encoding: chunked` whatever the request's
version, and an HTTP/1.0 client does not know that coding (RFC 9112 §6.1: a server must not send it to one): it
would take the chunk sizes for part of the body. An HTTP/1.0 request's connection is never kept alive (the cycle
says `connection: close`), so such an answer's body is delimited by the connection's close instead, as HTTP/1.0
defines it: its bytes written as they come, unframed, and the connection closed at its end.

Only HTTP/1.0 requests get this cycle (the protocol makes it when it reads one): an HTTP/1.1 request's answer takes
no step more.
"""

from __future__ import annotations

from typing import Any

from gateway.server.timing import TimedCycle


class Http10Cycle(TimedCycle):
    """A TimedCycle whose answer without a length is delimited by the connection's close, not chunked."""

    close_delimited = False  # the answer's body ends with the connection

    async def send(self, message: Any) -> None:
        if not self.close_delimited:
            if (
                message["type"] == "http.response.start"
                and not self.response_started
                and not self.disconnected
                and self.chunked_encoding is None
                and self.scope["method"] != "HEAD"
                and message["status"] not in (204, 304)
                and not _framed(message.get("headers", ()))
            ):
                # uvicorn's send writes the head without transfer-encoding when it finds chunked_encoding decided;
                # the body's bytes are written here.
                self.chunked_encoding = False
                self.close_delimited = True
            await super().send(message)
            return
        if message["type"] != "http.response.body" or self.response_complete:
            await super().send(message)  # uvicorn's error for a message out of place, or nothing once complete
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        body = message.get("body", b"")
        if body:
            self.transport.write(body)
        if not message.get("more_body", False):
            self.response_complete = True
            self.message_event.set()
            self.transport.close()  # the end of the body
            self.on_response()


def _framed(headers: Any) -> bool:
    """Whether the app's headers frame the body themselves (a length, or a transfer coding of its own)."""
    for name, _ in headers:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            return True
    return False
