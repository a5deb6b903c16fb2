"""Limits in Redis, shared by every worker and replica: limits.lua checks and reserves every limit of a request
in one round trip. Settlements (the other half of each request) never hold a request up: they are queued and
sent in batches, one script call per batch, by a background task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources

from gateway import tasks
from gateway.state.limiter import Check, LimiterUnavailable, Outcome
from gateway.state.redis_client import RedisUnavailable, RespClient, Script

logger = logging.getLogger("gateway.limits")

_SCRIPT = resources.files("gateway.state").joinpath("limits.lua").read_text(encoding="utf-8")


class RedisLimiter:
    name = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.25, on_error: Callable[[], None] | None = None) -> None:
        self._client = RespClient(url, timeout_s=timeout_s)
        self._script = Script(self._client, _SCRIPT)
        self._on_error = on_error
        self._pending: list[tuple[Check, float]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def reserve(self, checks: list[Check]) -> Outcome:
        args: list[float | int | str] = ["r"]
        for check in checks:
            args += check.args(check.cost)
        try:
            raw = await self._script(keys=[c.key for c in checks], args=args)
        except RedisUnavailable as exc:
            raise LimiterUnavailable(f"redis: {exc}") from exc
        if int(raw[0]) == 0:
            return Outcome(ok=False, failed=int(raw[1]) - 1, retry_ms=float(raw[2]))
        n = len(checks)
        return Outcome(
            ok=True,
            remaining=[float(v) for v in raw[1 : n + 1]],
            reset_ms=[float(v) for v in raw[n + 1 : 2 * n + 1]],
            soft_crossed=[int(v) - 1 for v in raw[2 * n + 1 :]],
        )

    async def peek(self, checks: list[Check]) -> list[float]:
        if not checks:
            return []
        args: list[float | int | str] = ["p"]
        for check in checks:
            args += check.args(0.0)
        try:
            raw = await self._script(keys=[c.key for c in checks], args=args)
        except RedisUnavailable as exc:
            raise LimiterUnavailable(f"redis: {exc}") from exc
        return [float(v) for v in raw]

    def settle(self, items: list[tuple[Check, float]]) -> None:
        self._pending.extend(items)
        self._idle.clear()
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = tasks.spawn(self._flush_loop(), name="ratelimit-settle")

    async def flush(self) -> None:
        """Wait until every queued settlement has been sent (or dropped after a failure)."""
        await self._idle.wait()

    @property
    def settled(self) -> bool:
        """Whether every queued settlement has been sent (or dropped): flush() for a caller outside the loop."""
        return self._idle.is_set() and not self._pending

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:500], self._pending[500:]
                await self._send(batch)
            self._idle.set()

    async def _send(self, batch: list[tuple[Check, float]]) -> None:
        args: list[float | int | str] = ["s"]
        for check, delta in batch:
            args += check.args(delta)
        try:
            await self._script(keys=[c.key for c, _ in batch], args=args)
        except RedisUnavailable as exc:
            # Lost settlements leave a reservation standing: tokens come back as the bucket refills, a
            # concurrency slot when its lease expires. Counted, not retried, so a dead Redis cannot pile them up.
            logger.debug("ratelimit settlements dropped: %s", exc)
            if self._on_error is not None:
                self._on_error()

    async def close(self) -> None:
        if self._pending:
            try:
                async with asyncio.timeout(2.0):
                    await self.flush()
            except TimeoutError:
                pass
        await tasks.cancel(self._flusher)
        await self._client.close()
