"""The access log: one JSON line per request on a stream (stdout by default), written a batch at a time."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.store.records import Record
from gateway.tasks import map_in_slices

FIELDS = (
    "ts", "id", "client_request_id", "endpoint", "status", "model_requested", "model_served", "provider", "key_name",
    "project", "latency_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "cost_usd", "error_type", "stream",
)  # fmt: skip


def _compile_line() -> Callable[[Record], bytes]:
    """line(), written out field by field: one dict display and orjson's own newline, where a comprehension merged
    into a second dict and a copy to add the newline cost twice as much."""
    fields = ", ".join(f"{k!r}: record[{k!r}]" for k in FIELDS)
    scope: dict[str, Any] = {"dumps": orjson.dumps, "NEWLINE": orjson.OPT_APPEND_NEWLINE}
    source = f"def line(record, dumps=dumps, NL=NEWLINE):\n    return dumps({{'log': 'access', {fields}}}, option=NL)"
    exec(source, scope)  # code made from FIELDS above, never from input
    function: Callable[[Record], bytes] = scope["line"]
    function.__doc__ = 'The record\'s access log line: its FIELDS after `"log": "access"`, as JSON, and a newline.'
    return function


line = _compile_line()


# A batch this small goes to a regular file from the event loop: into the page cache in microseconds, where the
# hand-off to a thread costs ~80 µs of CPU (the thread's wake-up, the GIL passed twice, the loop woken with the
# answer) — at a low request rate, a writer's batch of a few records paid it for every few requests.
DIRECT_MAX_BYTES = 64 * 1024


def _regular_file(stream: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no file descriptor (io.BytesIO raises UnsupportedOperation)
        return False


class AccessLog:
    name = "access_log"

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.regular_file = _regular_file(stream)

    async def write(self, records: Sequence[Record]) -> None:
        lines = b"".join(await map_in_slices(line, records))
        if self.regular_file and len(lines) <= DIRECT_MAX_BYTES:
            self._write(lines)  # a regular file has no reader to wait on
            return
        # In a thread: stdout may be a pipe whose reader is slow, and the event loop must not wait on it.
        await asyncio.to_thread(self._write, lines)

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()
