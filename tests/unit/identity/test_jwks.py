"""The JWKS cache on a clock the test moves: an unknown kid refetches at most every `jwks_min_refresh_s`, and a key
set older than `jwks_cache_s` is refetched in the background."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.config import JwtConfig
from gateway.identity.jwt import Jwks
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio

KEY = {"kty": "oct", "kid": "k1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "alg": "HS256"}


async def test_refetches_follow_the_clock_not_the_machines_speed() -> None:
    fetches: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetches.append(1)
        return httpx.Response(200, json={"keys": [KEY]})

    clock = FakeClock()
    config = JwtConfig(jwks_url="https://issuer.test/jwks.json", jwks_cache_s=300, jwks_min_refresh_s=5)
    jwks = Jwks(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)), clock=clock.monotonic)
    try:
        await jwks.refresh()
        assert await jwks.get("k1") is not None
        assert await jwks.get("unknown") is None
        assert len(fetches) == 1  # an unknown kid within min_refresh of the last fetch: no refetch
        clock.advance(5)
        assert await jwks.get("unknown") is None
        assert len(fetches) == 2
        clock.advance(300.001)
        assert await jwks.get("k1") is not None  # served from the cache while it is refreshed
        for _ in range(100):
            if len(fetches) == 3:
                break
            await asyncio.sleep(0)
        assert len(fetches) == 3
    finally:
        await jwks.close()
