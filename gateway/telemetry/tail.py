"""The live tail: records as they are written, to each WebSocket subscriber whose filters they match.

A sink of the telemetry queue, so a subscriber sees a record once it is complete (tokens counted, content
rendered), in the order the queue writes them. Each subscriber has a bounded queue of its own: one that reads
slowly loses records (counted, and told so) rather than holding back the writer or the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.store.trace_sql import STATUS_RANGES, TraceQuery

Record = dict[str, Any]

# TraceQuery field -> (record key, comparison) for the filters a record answers by itself.
_EQUAL = {
    "project": "project", "model": "model_requested", "served_model": "model_served", "provider": "provider",
    "deployment": "deployment", "status": "status", "error_type": "error_type", "error_domain": "error_domain",
    "user": "user_id", "team": "team", "trace_id": "trace_id", "client_request_id": "client_request_id",
}  # fmt: skip
_RANGES = {
    "latency_ms": "latency_ms", "cost_usd": "cost_usd", "total_tokens": "total_tokens",
    "prompt_tokens": "prompt_tokens", "completion_tokens": "completion_tokens",
}  # fmt: skip


def matches(q: TraceQuery, record: Record) -> bool:
    """What the store's WHERE clause says of a record (gateway/store/trace_sql.py), in Python."""
    for name, key in _EQUAL.items():
        wanted = getattr(q, name)
        if wanted is not None and record.get(key) != wanted:
            return False
    for name, key in _RANGES.items():
        low, high = getattr(q, f"min_{name}"), getattr(q, f"max_{name}")
        if low is None and high is None:
            continue
        value = record.get(key)
        # An unknown value (a cost without a price) is within no bound, as SQL's NULL compares to nothing.
        if value is None or (low is not None and value < low) or (high is not None and value > high):
            return False
    ts = record["ts"]
    if (q.since is not None and ts < q.since) or (q.until is not None and ts >= q.until):
        return False
    if q.status_class is not None:
        low, high = STATUS_RANGES[q.status_class]
        if not low <= record["status"] < high:
            return False
    if q.key is not None and q.key not in (record.get("key_id"), record.get("key_name")):
        return False
    for column, wanted in (("tags", q.tags), ("metadata", q.metadata)):
        held = record.get(column) or {}
        if any(str(held.get(k)) != v for k, v in wanted.items()):
            return False
    if q.text:
        needle = q.text.lower()
        if (
            needle not in record.get("content_input", "").lower()
            and needle not in record.get("content_output", "").lower()
        ):
            return False
    return q.ids is None or record["id"] in q.ids


class Subscription:
    def __init__(self, query: TraceQuery, capacity: int) -> None:
        self.query = query
        self.queue: asyncio.Queue[Record] = asyncio.Queue(capacity)
        self.dropped = 0  # records this subscriber was too slow for, since it was last told


class TraceTail:
    name = "tail"

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.subscriptions: set[Subscription] = set()

    def subscribe(self, query: TraceQuery) -> Subscription:
        subscription = Subscription(query, self.capacity)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    async def write(self, records: Sequence[Record]) -> None:
        for subscription in list(self.subscriptions):
            query = subscription.query
            for record in records:
                if not matches(query, record):
                    continue
                try:
                    subscription.queue.put_nowait(record)
                except asyncio.QueueFull:
                    subscription.dropped += 1
