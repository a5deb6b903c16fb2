"""X-Response-Time on every answer the server sends: the time since the request's head was read, to the moment
the answer's head is written (for a stream, its headers), in milliseconds with three decimals and the unit, as
express's and koa's response-time middleware write it (`12.345ms`).

The server adds it, not the app: every answer goes through here (the pipeline's, streams, errors, the admin API,
health, metrics, 404s, uvicorn's own 500 and the server's refusals), and timing it costs no ASGI wrapper, which
would add a closure and an await to every message of every answer and take the whole-answer fast path away
(protocol.send_whole). What it costs a request: one clock read when its head is read, and the header itself.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

RESPONSE_TIME = b"x-response-time"


def response_time(since_ns: int) -> tuple[bytes, bytes]:
    """The header, for a request whose head was read at `since_ns` (time.perf_counter_ns())."""
    return RESPONSE_TIME, b"%.3fms" % ((time.perf_counter_ns() - since_ns) / 1e6)


class TimedCycle(RequestResponseCycle):
    """uvicorn's request cycle with x-response-time on its answer.

    The protocol makes the cycle as this class when a head is read (protocol.py, on_headers_complete; when it
    lets uvicorn make it, it swaps the class at once) and notes `head_ns`. uvicorn reads `default_headers` (the
    server's date and server headers) once per answer, when it writes the answer's head, and so does send_whole:
    computed at that moment, they carry the answer's time too."""

    head_ns: int  # time.perf_counter_ns() when the request's head was read

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return [*self.__dict__["default_headers"], response_time(self.head_ns)]

    @default_headers.setter
    def default_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.__dict__["default_headers"] = headers
