"""State in Redis, shared by every worker and replica. One round trip per operation, on the same kind of client
as the rate limiter (state/redis_client.py's connect: the lean RESP connection, or the cluster client)."""

from __future__ import annotations

from typing import Any

from gateway.state.base import StateUnavailable
from gateway.state.redis_client import RedisUnavailable, Script, connect

# INCRBY then PEXPIRE only when the key is new, atomically, in one round trip.
_INCR = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""
# HSET of field/value pairs, then PEXPIRE when a TTL is given: atomic without MULTI, which a connection shared by
# concurrent callers could not keep to one caller.
_HSET = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
# A hash and its time left, in one round trip.
_HGETALL_TTL = """
return {redis.call('PTTL', KEYS[1]), redis.call('HGETALL', KEYS[1])}
"""
TIMEOUT_S = 1.0


class RedisState:
    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        # Connects on first use: a Redis that is down at start-up must not stop the gateway.
        # Every call touches one key: on a Redis Cluster, each goes to its own slot's master.
        self._client = connect(url, timeout_s=TIMEOUT_S)
        self._incr = Script(self._client, _INCR)
        self._hset = Script(self._client, _HSET)
        self._hgetall_ttl = Script(self._client, _HGETALL_TTL)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        await self._call("PING")

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        try:
            return int(await self._incr(keys=[key], args=[amount, _ms(ttl_s)]))
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc

    async def get(self, key: str) -> str | None:
        value = await self._call("GET", key)
        return None if value is None else _text(value)

    async def delete(self, key: str) -> None:
        await self._call("DEL", key)

    async def hset(self, key: str, values: dict[str, str], ttl_s: float | None = None) -> None:
        if not values:
            return
        pairs = [item for field_value in values.items() for item in field_value]
        try:
            await self._hset(keys=[key], args=[_ms(ttl_s), *pairs])
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc

    async def hgetall(self, key: str) -> dict[str, str]:
        flat = await self._call("HGETALL", key) or []
        return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}

    async def hgetall_ttl(self, key: str) -> tuple[dict[str, str], float | None]:
        try:
            ttl_ms, flat = await self._hgetall_ttl(keys=[key], args=[])
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        return fields, int(ttl_ms) / 1000 if int(ttl_ms) >= 0 else None  # -1: no expiry, -2: no key

    async def hdel(self, key: str, fields: list[str]) -> None:
        if fields:
            await self._call("HDEL", key, *fields)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        if ttl_s:
            await self._call("SET", key, value, "PX", _ms(ttl_s))
        else:
            await self._call("SET", key, value)

    async def _call(self, *args: str | int) -> Any:
        try:
            return await self._client.call(*args)
        except RedisUnavailable as exc:
            raise StateUnavailable(str(exc)) from exc


def _ms(ttl_s: float | None) -> int:
    return max(1, int(ttl_s * 1000)) if ttl_s else 0  # 0: no expiry


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
