"""The Sink protocol: what the telemetry writer hands each batch of finished records to (the store, the access
log, each outbox of an outside system)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.store.records import Record


class Sink(Protocol):
    name: str

    async def write(self, records: Sequence[Record]) -> None:
        """Write a batch, or raise: the writer retries the same batch later."""
