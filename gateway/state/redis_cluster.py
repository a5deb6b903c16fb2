"""The client behind redis+cluster:// URLs: redis-py's RedisCluster, which maps slots to masters, follows MOVED
and ASK, and reloads the map when a node fails or a replica takes over. It sits behind the same interface as
the lean one-server client (redis_client.py) and keeps its bounds: a call that has no answer within `timeout_s`,
whatever redis-py retries inside it, fails with RedisUnavailable, so a cluster that fails or hangs degrades the
gateway exactly as one Redis does.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, SlotNotCoveredError

from gateway.config.redis_url import parse_cluster
from gateway.state.redis_client import Arg, RedisUnavailable

# Replies stay raw, as hiredis gives them on the one-server client: redis-py's parsers for the commands the
# gateway sends are removed (its own topology commands keep theirs).
_RAW = ("PING", "GET", "SET", "DEL", "UNLINK", "INCRBY", "HSET", "HDEL", "HGETALL", "PEXPIRE", "EVAL", "EVALSHA",
        "XADD", "XREAD", "SCAN")  # fmt: skip
# Connections per node. redis-py raises when a node's pool is exhausted, so calls beyond wait for a slot here.
MAX_CONNECTIONS = 64


class ClusterClient:
    cluster = True

    def __init__(self, url: str, *, timeout_s: float) -> None:
        parsed = parse_cluster(url)
        self.timeout_s = timeout_s
        # Connects on first use (and learns the cluster from whichever seed answers): a cluster that is down at
        # start-up must not stop the gateway.
        self._redis = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.tls,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=MAX_CONNECTIONS,
            protocol=2,  # RESP2's flat replies, which the callers parse (HGETALL, XREAD) on either client
        )
        for command in _RAW:
            self._redis.response_callbacks.pop(command, None)
            self._redis.result_callbacks.pop(command, None)
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def call(self, *args: Arg, **route: Any) -> Any:
        """One command, routed by its keys (every key of it in one slot), or to `target_nodes`."""
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline, self._slots:
                reply = await self._redis.execute_command(*args, **route)
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:  # the third is not a RedisError
            if _cancelled(task, before, deadline):
                raise asyncio.CancelledError from exc
            if isinstance(exc, NoScriptError):  # Script loads it again when the message says so, as on one server
                raise RedisUnavailable(f"redis cluster: NOSCRIPT {exc}") from exc
            if isinstance(exc, TimeoutError):
                raise RedisUnavailable(f"redis cluster: no answer within {self.timeout_s * 1000:.0f} ms") from exc
            raise RedisUnavailable(f"redis cluster: {type(exc).__name__}: {exc}") from exc
        if _cancelled(task, before, deadline):
            raise asyncio.CancelledError
        return reply

    async def master_of(self, slot: int) -> ClusterNode:
        """The master serving a slot, by this client's map of the cluster (loaded first if it is not yet): where a
        call on its keys goes, barring a redirection."""
        try:
            return self._redis.nodes_manager.get_node_from_slot(slot)
        except SlotNotCoveredError:
            await self.call("PING")  # the map of the cluster, made or refreshed
        try:
            return self._redis.nodes_manager.get_node_from_slot(slot)
        except SlotNotCoveredError as exc:
            raise RedisUnavailable(f"redis cluster: {exc}") from exc

    async def unlink_matching(self, pattern: str, count: int) -> int:
        """SCAN on every master (each holds its own slots' keys), UNLINK by slot (one call, one slot)."""
        await self.call("PING")  # the map of the cluster, made or refreshed
        removed = 0
        for node in self._redis.get_primaries():
            cursor: Any = b"0"
            while True:
                cursor, keys = await self.call("SCAN", cursor, "MATCH", pattern, "COUNT", count, target_nodes=node)
                by_slot: defaultdict[int, list[bytes]] = defaultdict(list)
                for key in keys:
                    by_slot[key_slot(key)].append(key)
                for same_slot in by_slot.values():
                    removed += int(await self.call("UNLINK", *same_slot))
                if cursor in (b"0", "0", 0):
                    break
        return removed

    async def close(self) -> None:
        await self._redis.aclose()


def _cancelled(task: asyncio.Task[Any] | None, before: int, deadline: asyncio.Timeout) -> bool:
    """Whether the caller was cancelled during a call. redis-py can swallow a cancellation (seen with 8.2: XREAD
    answered normally after the task that awaited it was cancelled), and a background loop stopped at shutdown
    would then go on forever: the cancellation is raised again here. A cancellation by the call's own deadline
    that it swallowed is taken back instead (the task would otherwise stay "cancelling")."""
    if task is None:
        return False
    pending = task.cancelling() - before
    if pending > 0 and deadline.expired():
        task.uncancel()
        pending -= 1
    return pending > 0
