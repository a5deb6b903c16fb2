"""The per-worker key cache on a clock the test moves: a key read once is trusted for `ttl_s`, an unknown one for
`negative_ttl_s`, and not a moment longer."""

from __future__ import annotations

import pytest

from gateway.identity.keys import KeyCache, key_digest
from gateway.store.rows import VirtualKey
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, VirtualKey] = {}
        self.reads = 0

    async def key_by_hash(self, key_hash: str) -> VirtualKey | None:
        self.reads += 1
        return self.rows.get(key_hash)


async def test_entries_live_exactly_their_ttl() -> None:
    clock, store = FakeClock(), Store()
    cache = KeyCache(store, ttl_s=10, negative_ttl_s=2, clock=clock.monotonic)
    digest = key_digest("sk-gw-one")
    store.rows[digest] = VirtualKey(id="vk_1", key_hash=digest, key_prefix="sk-gw-on")
    assert (await cache.get(digest)).principal is not None
    del store.rows[digest]  # revoked elsewhere, deleted even
    clock.advance(9.999)
    assert (await cache.get(digest)).principal is not None  # this worker's copy, within its TTL
    clock.advance(0.002)
    assert (await cache.get(digest)).principal is None
    assert store.reads == 2

    unknown = key_digest("sk-gw-nope")
    assert (await cache.get(unknown)).principal is None
    store.rows[unknown] = VirtualKey(id="vk_2", key_hash=unknown, key_prefix="sk-gw-no")
    clock.advance(1.999)
    assert (await cache.get(unknown)).principal is None  # remembered as unknown
    clock.advance(0.002)
    assert (await cache.get(unknown)).principal is not None
