"""The access log: one JSON line per request on a stream (stdout by default), written a batch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.store.records import Record
from gateway.tasks import map_in_slices

FIELDS = (
    "ts", "id", "client_request_id", "endpoint", "status", "model_requested", "model_served", "provider", "key_name",
    "project", "latency_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "cost_usd", "error_type", "stream",
)  # fmt: skip


def line(record: Record) -> bytes:
    return orjson.dumps({"log": "access", **{k: record[k] for k in FIELDS}}) + b"\n"


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
