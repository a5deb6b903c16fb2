"""The access log: one JSON line per request on a stream (stdout by default), written a batch at a time."""

from __future__ import annotations

import asyncio
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


class AccessLog:
    name = "access_log"

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    async def write(self, records: Sequence[Record]) -> None:
        lines = b"".join(await map_in_slices(line, records))
        # In a thread: stdout may be a pipe whose reader is slow, and the event loop must not wait on it.
        await asyncio.to_thread(self._write, lines)

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.stream.flush()
