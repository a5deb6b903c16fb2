"""State in this process only: right for one worker, or for limits that need not be shared."""

from __future__ import annotations

import time

from gateway.types import Clock


class MemoryState:
    name = "memory"

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._values: dict[str, tuple[str, float | None]] = {}
        self._hashes: dict[str, tuple[dict[str, str], float | None]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._values.clear()
        self._hashes.clear()

    async def ping(self) -> None:
        return None

    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self.clock():
            del self._values[key]
            return None
        return value

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        current = self._live(key)
        if current is None:
            expires = self.clock() + ttl_s if ttl_s else None
            value = amount
        else:
            expires = self._values[key][1]
            value = int(current) + amount
        self._values[key] = (str(value), expires)
        return value

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        self._values[key] = (value, self.clock() + ttl_s if ttl_s else None)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._hashes.pop(key, None)

    async def hset(self, key: str, values: dict[str, str], ttl_s: float | None = None) -> None:
        fields = self._live_hash(key) or {}
        fields.update(values)
        self._hashes[key] = (fields, self.clock() + ttl_s if ttl_s else None)

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self._live_hash(key) or {})

    async def hgetall_ttl(self, key: str) -> tuple[dict[str, str], float | None]:
        fields = self._live_hash(key)
        if fields is None:
            return {}, None
        expires = self._hashes[key][1]
        return dict(fields), None if expires is None else expires - self.clock()

    async def hdel(self, key: str, fields: list[str]) -> None:
        for name in fields:
            (self._live_hash(key) or {}).pop(name, None)

    def _live_hash(self, key: str) -> dict[str, str] | None:
        item = self._hashes.get(key)
        if item is None:
            return None
        fields, expires = item
        if expires is not None and expires <= self.clock():
            del self._hashes[key]
            return None
        return fields
