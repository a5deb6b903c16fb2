"""The semantic cache shared across replicas: one Redis stream, a full copy in every replica.

Each replica keeps every row in its own memory (semantic_index.py), so a lookup never waits on the network.
What a replica adds, or purges, is queued and written in the background to the stream
`gateway:semcache:<embedding>` (XADD with MAXLEN ~ `stream_max`): the row's vector (int8 and a scale, as the
index keeps it: about 700 bytes an entry at 512 dimensions), signature,
veto fingerprint, key, scope, project and expiry time, or a purge marker. Every `interval_s` each replica reads
what was written after the last entry it has seen (XREAD, 200 entries a call) and applies the others' rows and
purges, a few at a time so that the event loop is never held for long. A replica that starts reads the stream
from its beginning: what was trimmed from it (beyond `stream_max` entries of all projects) is not shared with it.

Redis down, slow or hung: each call fails after `timeout_s`, the writes wait in the queue (rows beyond
`queue_max` are dropped and counted; purges are kept), the loop tries again after a pause that doubles up to
`MAX_BACKOFF_S`, and lookups go on from the copy. A purge that some replica has not read yet is harmless beyond
the semantic index: a semantic hit is served from the exact cache's entry, which the purge removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson

from gateway.cache.semantic_index import WORDS, Row, VectorIndex, quantize
from gateway.cache.veto import Fingerprint
from gateway.state.redis_client import RedisUnavailable, connect
from gateway.tasks import cancel, spawn, wait_for_wakeup

__all__ = ["RedisSync", "decode_row", "encode_row"]

logger = logging.getLogger("gateway")

READ_COUNT = 200  # entries a read: a reply of ~250 KB, parsed in a fraction of a millisecond
WRITE_BATCH = 200
APPLY_SLICE = 16  # entries applied between two yields to the event loop (~20 µs each)
MAX_BACKOFF_S = 5.0
Field = str | bytes | int | float


def encode_row(row: Row, origin: str) -> list[Field]:
    quantized, scale = quantize(row.vector)
    fp = row.fingerprint
    sets = [fp.numbers, fp.quantities, fp.units, fp.dates, fp.names, fp.initials]
    fingerprint = [sets, fp.negations, fp.operators, fp.script, fp.language, fp.words, fp.roles]
    return [
        "o", origin, "t", "a", "p", row.project, "s", row.scope, "k", row.key,
        "v", quantized.tobytes(), "c", repr(scale), "g", row.signature.tobytes(),
        "f", orjson.dumps(fingerprint), "e", repr(row.expires_at),
    ]  # fmt: skip


def decode_row(fields: dict[bytes, bytes]) -> Row:
    sets, negations, operators, script, language, words, roles = orjson.loads(fields[b"f"])
    numbers, quantities, units, dates, names, initials = (tuple(map(str, s)) for s in sets)
    fp = Fingerprint(
        numbers, quantities, units, dates, names, initials, int(negations), str(operators), str(script),
        str(language), str(words), tuple(map(str, roles)),
    )  # fmt: skip
    vector = np.frombuffer(fields[b"v"], dtype=np.int8).astype(np.float32) * float(fields[b"c"])
    signature = np.frombuffer(fields[b"g"], dtype=np.uint64).copy()
    if len(signature) != WORDS:
        raise ValueError("signature of another size")
    return Row(
        fields[b"p"].decode(), fields[b"s"].decode(), fields[b"k"].decode(), vector, signature, fp,
        float(fields[b"e"]),
    )  # fmt: skip


class RedisSync:
    """Writes this replica's rows and purges to the stream and reads the others' into `index` (module
    docstring). Started on first use, inside the running loop."""

    def __init__(
        self,
        url: str,
        index: VectorIndex,
        *,
        embedder: str,
        stream_max: int,
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
        replica: str,
        queue_max: int = 10_000,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.on_error = on_error  # a failed round, for a metric (gateway_cache_semantic_sync_errors)
        self.stream = f"gateway:semcache:{embedder}"
        self.stream_max = stream_max
        self.interval_s = interval_s
        self.clock = clock
        self.replica = replica
        self.queue_max = queue_max
        # One stream, one key: on a Redis Cluster it lives in one slot, which every replica reads.
        self._client = connect(url, timeout_s=timeout_s)
        self._pending: deque[list[Field]] = deque()
        self._rows_pending = 0
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.healthy = True  # the last call to Redis succeeded
        self.written = 0
        self.received = 0
        self.dropped = 0  # rows not shared: the queue was full while Redis was away
        self.errors = 0  # failed rounds (Redis down, hung or refusing)
        self.rounds = 0  # completed rounds: tests wait on it instead of sleeping

    def start(self) -> None:
        if self._task is None:
            self._task = spawn(self._run(), name="semantic-cache-sync")

    def publish(self, row: Row) -> None:
        if self._rows_pending >= self.queue_max:
            self.dropped += 1
            return
        self._rows_pending += 1
        self._pending.append(encode_row(row, self.replica))

    def publish_purge(self, project: str, scope: str | None) -> None:
        fields: list[Field] = ["o", self.replica, "t", "p", "p", project]
        self._pending.append(fields if scope is None else [*fields, "s", scope])
        self._wake.set()

    async def close(self) -> None:
        """Stops the loop, then writes what is still queued, if Redis answers within its timeout: the rows of a
        replica that shuts down stay useful to the others."""
        await cancel(self._task)
        self._task = None
        if self._pending:
            with contextlib.suppress(RedisUnavailable):
                await self._write()
        await self._client.close()

    async def _run(self) -> None:
        backoff = self.interval_s
        while True:
            try:
                more = await self.sync_once()
            except RedisUnavailable as exc:
                if self.healthy:
                    logger.warning("semantic cache: Redis unavailable, serving from this replica's copy: %s", exc)
                self.healthy = False
                self.errors += 1
                if self.on_error is not None:
                    self.on_error()
                more = False
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            else:
                if not self.healthy:
                    logger.warning("semantic cache: Redis answers again, sharing resumed")
                self.healthy = True
                backoff = self.interval_s
            self.rounds += 1
            if not more:
                await wait_for_wakeup(self._wake, backoff)

    async def sync_once(self) -> bool:
        """Write what is queued, read what others wrote; True when there is more to read at once."""
        await self._write()
        reply = await self._client.call("XREAD", "COUNT", READ_COUNT, "STREAMS", self.stream, self._last_id)
        entries: list[Any] = reply[0][1] if reply else []
        for start in range(0, len(entries), APPLY_SLICE):
            if start:
                await asyncio.sleep(0)
            for entry_id, flat in entries[start : start + APPLY_SLICE]:
                for _ in self._apply(dict(zip(flat[::2], flat[1::2], strict=True))):
                    await asyncio.sleep(0)  # a purge of many rows, a step at a time
                self._last_id = entry_id.decode()
        return len(entries) == READ_COUNT

    async def _write(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(WRITE_BATCH, len(self._pending)))]
            calls = [
                self._client.call("XADD", self.stream, "MAXLEN", "~", self.stream_max, "*", *fields) for fields in batch
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                # All of the batch again, in order, first: a row written twice replaces itself (same key).
                self._pending.extendleft(reversed(batch))
                if isinstance(failed, RedisUnavailable):
                    raise failed
                raise RedisUnavailable(f"redis: {failed!r}") from failed
            self._rows_pending -= sum(1 for fields in batch if fields[3] == "a")
            self.written += len(batch)

    def _apply(self, fields: dict[bytes, bytes]) -> Iterator[None]:
        """Applies one entry; what it returns is the rest of a purge's work, in steps (empty for a row)."""
        if fields.get(b"o", b"").decode() == self.replica:
            return iter(())  # this replica's own row or purge, applied when it was made
        self.received += 1
        try:
            if fields[b"t"] == b"p":
                scope = fields.get(b"s")
                _, rest = self.index.purge(fields[b"p"].decode(), None if scope is None else scope.decode())
                return rest
            row = decode_row(fields)
        except (KeyError, ValueError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
            logger.warning("semantic cache: skipped a malformed stream entry: %r", exc)
            return iter(())
        if row.expires_at > self.clock():
            self.index.add(row)
        return iter(())
