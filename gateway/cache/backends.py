"""Where cached answers live: in this process's memory (bounded by bytes, least recently used first out, each
entry with its expiry) or in Redis (shared by every worker and replica, expired by Redis itself).

Both answer `get` by the exact key and the two names it is filed under (project, model), so that Redis can purge
a project's or a model's entries by pattern without an index to keep in step.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from gateway.cache.entry import ENTRY_OVERHEAD, Entry, EntryFields
from gateway.types import Clock

if TYPE_CHECKING:
    from gateway.state.redis_client import RedisClient

_new_tuple = tuple.__new__


class CacheBackend(Protocol):
    name: str

    async def get(self, project: str, model: str, key: str) -> Entry | None: ...

    async def put(self, key: str, entry: Entry, ttl_s: float) -> None: ...

    async def purge(self, project: str | None, model: str | None, key: str | None) -> int:
        """Remove the entries that match every name given (at least one is); how many were removed."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Per process. `clock` is epoch seconds (injectable: tests step it past a TTL)."""

    name = "memory"

    def __init__(self, max_bytes: int, *, clock: Clock = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        # key -> (the entry's fields, expiry), least recently used first: plain tuples of plain values, which the
        # collector stops tracking (EntryFields). Read and written by ResponseCache too: a miss's lookup and the
        # keeping of its answer, without a call each.
        self.entries: OrderedDict[str, tuple[EntryFields, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get_now(self, key: str) -> Entry | None:
        found = self.entries.get(key)
        if found is None:
            return None
        fields, expires = found
        if self.clock() >= expires:
            self._remove(key)
            return None
        self.entries.move_to_end(key)
        return _new_tuple(Entry, fields)

    async def get(self, project: str, model: str, key: str) -> Entry | None:
        return self.get_now(key)  # the key is a digest of the project and model already

    def put_now(self, key: str, entry: EntryFields, ttl_s: float, size: int | None = None) -> None:
        """`entry`: an Entry or its fields as a plain tuple; `size`: entry.size, when the caller has it."""
        entries = self.entries
        replaced = entries.pop(key, None)
        if replaced is not None:
            self.bytes -= len(replaced[0][0]) + ENTRY_OVERHEAD
        if size is None:
            size = len(entry[0]) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        fields: EntryFields = entry if type(entry) is tuple else _new_tuple(tuple, entry)  # an Entry: its plain fields
        entries[key] = (fields, self.clock() + ttl_s)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(entries)))

    async def put(self, key: str, entry: Entry, ttl_s: float) -> None:
        self.put_now(key, entry, ttl_s)

    async def purge(self, project: str | None, model: str | None, key: str | None) -> int:
        doomed = [
            k
            for k, (fields, _) in self.entries.items()
            if (project is None or fields[3] == project)  # Entry.project
            and (model is None or fields[4] == model)  # Entry.model
            and (key is None or k == key)
        ]
        for k in doomed:
            self._remove(k)
        return len(doomed)

    def _remove(self, key: str) -> None:
        fields, _ = self.entries.pop(key)
        self.bytes -= len(fields[0]) + ENTRY_OVERHEAD

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self.entries.clear()
        self.bytes = 0


PREFIX = "gw:cache:"
_SCAN_COUNT = 1000


def _name(value: str) -> str:
    """A project's or model's part of a Redis key: a digest, so that no name (with ':' or '*' in it) can reach
    into another's pattern."""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def redis_key(project: str, model: str, key: str) -> str:
    return f"{PREFIX}{_name(project)}:{_name(model)}:{key}"


class RedisBackend:
    """Shared. Every call is bounded by the client's timeout (a hung Redis fails the call, not the request)."""

    name = "redis"

    def __init__(self, url: str, *, timeout_s: float) -> None:
        # redis-py (and the cryptography it pulls in) is imported only by a gateway that uses Redis.
        from gateway.state.redis_client import connect

        # Keys carry no hash tag: on a Redis Cluster entries spread over every slot (each call touches one key).
        self.client: RedisClient = connect(url, timeout_s=timeout_s)

    async def get(self, project: str, model: str, key: str) -> Entry | None:
        data = await self.client.call("GET", redis_key(project, model, key))
        return Entry.decode(data) if data is not None else None

    async def put(self, key: str, entry: Entry, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        await self.client.call("SET", redis_key(entry.project, entry.model, key), entry.encode(), "PX", ttl_ms)

    async def purge(self, project: str | None, model: str | None, key: str | None) -> int:
        pattern = (
            f"{PREFIX}{_name(project) if project is not None else '*'}:"
            f"{_name(model) if model is not None else '*'}:{key if key is not None else '*'}"
        )
        return await self.client.unlink_matching(pattern, _SCAN_COUNT)  # on a cluster, every master scanned

    async def ping(self) -> None:
        await self.client.call("PING")

    async def close(self) -> None:
        await self.client.close()
