"""State in Redis, shared by every worker and replica. One round trip per operation."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.state.base import StateUnavailable

# INCRBY then PEXPIRE only when the key is new, atomically, in one round trip.
_INCR = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""


class RedisState:
    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self._incr = self._client.register_script(_INCR)

    async def open(self) -> None:
        return None  # connect lazily: a Redis that is down at start-up must not stop the gateway

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        try:
            return int(await self._incr(keys=[key], args=[amount, int((ttl_s or 0) * 1000)]))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def get(self, key: str) -> str | None:
        try:
            value = await self._client.get(key)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        return value.decode() if isinstance(value, bytes) else value

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(key)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def hset(self, key: str, values: dict[str, str], ttl_s: float | None = None) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=values)  # type: ignore[arg-type]
                if ttl_s:
                    pipe.pexpire(key, int(ttl_s * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def hgetall(self, key: str) -> dict[str, str]:
        try:
            raw = await self._client.hgetall(key)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        return {_text(k): _text(v) for k, v in raw.items()}

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        try:
            await self._client.set(key, value, px=int(ttl_s * 1000) if ttl_s else None)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
