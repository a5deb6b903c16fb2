"""A sink's dead-letter file: the records it refused for good (a value its store cannot take), set aside so that they
never hold back the records behind them, and kept for an operator to look at or load by hand.

`<spool_dir>/<sink>/dead-letter.jsonl`, one JSON line per record: `{"at": epoch s, "sink", "error", "record"}` (the
record as the spool writes it: what JSON cannot hold as text).
Appended with O_APPEND in one write per batch (the workers of one gateway share the file), fsynced, and capped at
`max_bytes`: past it, refused records are counted as dropped and logged, never written. The methods are synchronous:
the outbox calls them from its spool thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.sinks.spool import json_line

logger = logging.getLogger("gateway.telemetry")

FILE_NAME = "dead-letter.jsonl"


class DeadLetter:
    def __init__(self, directory: Path, sink: str, *, max_bytes: int, fsync: bool = True) -> None:
        self.path = Path(directory) / FILE_NAME
        self.sink = sink
        self.max_bytes = max_bytes
        self.fsync = fsync

    def append(self, refused: Sequence[tuple[Any, str]]) -> int:
        """Write (record, why) pairs, in order, up to the cap; how many were written. Raises OSError."""
        at = time.time()
        lines = [json_line({"at": at, "sink": self.sink, "error": why, "record": record}) for record, why in refused]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            room = self.max_bytes - os.fstat(fd).st_size
            kept: list[bytes] = []
            for line in lines:
                if len(line) > room:
                    break
                kept.append(line)
                room -= len(line)
            if kept:
                data = memoryview(b"".join(kept))
                while data:
                    data = data[os.write(fd, data) :]
                if self.fsync:
                    os.fsync(fd)
        finally:
            os.close(fd)
        return len(kept)

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0
