"""The StateBackend protocol: counters and small values shared by every worker (memory) or replica (Redis).

Rate limits, budgets and breaker state build on it; each backend keeps one network round trip per operation.
"""

from __future__ import annotations

from typing import Protocol


class StateUnavailable(Exception):
    """The backend cannot be reached; callers degrade as configured."""


class StateBackend(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StateUnavailable if the backend cannot answer."""

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add to a counter and return its new value; a new counter expires after ttl_s."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def hset(self, key: str, values: dict[str, str], ttl_s: float | None = None) -> None:
        """Set fields of a hash; with ttl_s, the whole hash expires then."""

    async def hgetall(self, key: str) -> dict[str, str]: ...

    async def hgetall_ttl(self, key: str) -> tuple[dict[str, str], float | None]:
        """A hash and the seconds it has left (None: no hash, or one that does not expire), read together: a time
        left is the one timer that all replicas read alike, whatever their clocks say."""

    async def hdel(self, key: str, fields: list[str]) -> None:
        """Remove these fields of a hash (those it has)."""


def open_state(url: str) -> StateBackend:
    if url == "memory":
        from gateway.state.memory import MemoryState

        return MemoryState()
    from gateway.state.redis import RedisState

    return RedisState(url)
