"""ratelimit end to end: headers, the SDK's RateLimitError, exact admission under concurrency on the real Redis
(one process and two), token and budget reservations, Redis going away and coming back, per-IP limits."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.app import build_app
from gateway.config import GatewayConfig
from tests.conftest import KEY, running
from tests.faults import redis_server
from tests.integration.helpers import sdk_client, user, wait_settled
from tests.servers import serve
from tests.services import free_port, require_redis

AUTH = {"authorization": f"Bearer {KEY}"}
PIPELINE = ["auth", "ratelimit", "route"]
PRICED = {"deployments": [{"provider": "mock", "model": "demo-1", "price": {"input": 1000, "output": 1000}}]}


def body(max_tokens: int | None = None, model: str = "demo") -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


def post(url: str, payload: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=payload or body(), headers={**AUTH, **headers}, timeout=10)


async def burst(urls: list[str], n: int, payload: dict[str, Any] | None = None) -> list[int]:
    """n requests at once, spread over the urls; their statuses."""
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=n)) as client:
        calls = [
            client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=payload or body(), headers=AUTH)
            for i in range(n)
        ]
        return [r.status_code for r in await asyncio.gather(*calls)]


def clear(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    keys = client.keys("{gw:rl}:*")
    if keys:
        client.delete(*keys)
    return client


def test_headers_and_the_sdk_rate_limit_error(make_config: Callable[..., GatewayConfig]) -> None:
    limits = {"rules": [{"scope": "key", "rpm": 2, "tpm": 100_000}]}
    with running(make_config(pipeline=PIPELINE, limits=limits)) as (url, _):
        first = post(url)
        assert first.status_code == 200
        h = first.headers
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("2", "1")
        assert re.fullmatch(r"(29\.\d+|30)s", h["x-ratelimit-reset-requests"])  # a token back every 30 s
        assert h["x-ratelimit-limit-tokens"] == "100000"
        reserved = 100_000 - int(h["x-ratelimit-remaining-tokens"])
        assert 1000 < reserved < 1100  # the prompt plus default_completion_tokens
        second = post(url)
        # the first request's unused reservation came back: only its real usage and this estimate count
        used_first = first.json()["usage"]["total_tokens"]
        taken = 100_000 - int(second.headers["x-ratelimit-remaining-tokens"])
        assert taken <= used_first + reserved  # without reconciliation it would be two reservations (~2,000)
        assert taken > reserved - 200  # less what the bucket refilled in between (1,667 tokens a second)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk_client(url).chat.completions.create(model="demo", messages=user("hello there"))
        error = caught.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_budget_answers_insufficient_quota_and_stops_sdk_retries(make_config: Callable[..., GatewayConfig]) -> None:
    limits = {"rules": [{"scope": "project", "budget_usd": 0.5, "period": "day"}]}
    config = make_config(pipeline=PIPELINE, limits=limits, models={"demo": PRICED})
    with running(config) as (url, _):
        with pytest.raises(openai.RateLimitError) as caught:  # 1,000 tokens at $0.001 each > $0.50
            sdk_client(url).chat.completions.create(model="demo", messages=user("hi"))
        assert caught.value.code == "budget_exceeded"
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert post(url, body(max_tokens=100)).status_code == 200


@pytest.mark.redis
def test_concurrent_requests_admit_exactly_the_limit_on_redis(make_config: Callable[..., GatewayConfig]) -> None:
    redis_url = require_redis()
    clear(redis_url)
    limits = {"backend": redis_url, "rules": [{"scope": "key", "rpm": 7}]}
    with running(make_config(pipeline=PIPELINE, limits=limits)) as (url, _):
        statuses = asyncio.run(burst([url], 30))
    assert statuses.count(200) == 7
    assert statuses.count(429) == 23


@pytest.mark.redis
def test_two_processes_share_one_limit(tmp_path: Path) -> None:
    from tests.servers import gateway_process

    redis_url = require_redis()
    clear(redis_url)
    overrides: dict[str, Any] = {
        "pipeline": PIPELINE,
        "limits": {"backend": redis_url, "rules": [{"scope": "key", "rpm": 9}]},
    }
    with (
        gateway_process(tmp_path, name="a", **overrides) as (url_a, _),
        gateway_process(tmp_path, name="b", **overrides) as (url_b, _),
    ):
        statuses = asyncio.run(burst([url_a, url_b], 40))
    assert statuses.count(200) == 9  # global, not 9 per process


@pytest.mark.redis
def test_tokens_and_budget_never_overshoot_and_unused_reservations_return(
    make_config: Callable[..., GatewayConfig],
) -> None:
    redis_url = require_redis()
    client = clear(redis_url)
    # each request reserves ~1,010 tokens ($1.01 at $0.001 a token); it really uses ~15
    limits = {"backend": redis_url, "rules": [{"scope": "key", "tpm": 5000}, {"scope": "team", "budget_usd": 3.5}]}
    # slow answers: every request reserves before the first one settles and gives its reservation back
    slow = {"deployments": [{**PRICED["deployments"][0], "model": "demo-slow-300"}]}
    config = make_config(pipeline=PIPELINE, limits=limits, models={"demo": slow})
    with running(config) as (url, gateway):
        statuses = asyncio.run(burst([url], 12, body(max_tokens=1000)))
        assert statuses.count(200) == 3  # the budget is the tighter: 3 x $1.01 fit in $3.50, 4 do not
        wait_settled(gateway)
        (budget_key,) = client.keys("{gw:rl}:team:t1:usd:*")
        spent = float(client.hget(budget_key, "a") or 0)
        assert 0 < spent < 0.1  # real cost of three small answers, the reservations given back
        (tokens_key,) = client.keys("{gw:rl}:key:*:tpm*")
        assert statuses.count(200) == 3
        response = post(url, body(max_tokens=1000))
        assert response.status_code == 200  # room again once reconciled
        assert int(response.headers["x-ratelimit-remaining-tokens"]) > 5000 - 1100 - 3 * 30
        assert client.pttl(tokens_key) > 0


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.redis
def test_redis_stopped_mid_test_fails_open_then_recovers(
    make_config: Callable[..., GatewayConfig], tmp_path: Path
) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    limits = {"backend": redis_url, "retry_interval_s": 0.2, "rules": [{"scope": "key", "rpm": 50}]}
    with running(make_config(pipeline=PIPELINE, limits=limits)) as (url, _):
        with redis_server(port, tmp_path):
            assert post(url).status_code == 200
            assert metric(url, "gateway_ratelimit_degraded") == 0
        # Redis is gone: requests are still served, on per-process limits, and the metrics say so
        assert [post(url).status_code for _ in range(3)] == [200, 200, 200]
        assert metric(url, "gateway_ratelimit_degraded") == 1
        assert metric(url, "gateway_ratelimit_backend_errors_total") >= 1
        with redis_server(port, tmp_path):
            time.sleep(0.3)  # past retry_interval_s
            assert post(url).status_code == 200
            assert metric(url, "gateway_ratelimit_degraded") == 0
            # shared limits hold again: another replica spent the bucket, this process sees it
            client = redis.Redis(port=port)
            (key,) = client.keys("{gw:rl}:key:*")
            client.hset(key, mapping={"a": "0", "b": str(time.time() * 1000)})
            response = post(url)
            assert response.status_code == 429
            assert response.headers["retry-after"]


def test_redis_unreachable_fails_closed_when_configured(make_config: Callable[..., GatewayConfig]) -> None:
    limits = {
        "backend": f"redis://127.0.0.1:{free_port()}/0",
        "fail": "closed",
        "rules": [{"scope": "global", "rpm": 5}],
    }
    with running(make_config(pipeline=PIPELINE, limits=limits)) as (url, _):
        response = post(url)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "ratelimit_unavailable"


@pytest.mark.parametrize("trusted", [False, True])
def test_per_ip_limits_trust_forwarded_for_only_through_trusted_proxies(
    make_config: Callable[..., GatewayConfig], trusted: bool
) -> None:
    server = {"access_log": False, "trusted_proxies": ["127.0.0.1/32"] if trusted else []}
    limits = {"rules": [{"scope": "ip", "rpm": 2}]}
    config = make_config(pipeline=PIPELINE, auth={"mode": "none"}, limits=limits, server=server)
    # as `gateway serve` runs uvicorn: X-Forwarded-For is the gateway's to judge, not uvicorn's
    with serve(build_app(config), proxy_headers=False) as url:
        by_client = [post(url, **{"x-forwarded-for": f"203.0.113.{i}"}).status_code for i in range(4)]
        same_client = [post(url, **{"x-forwarded-for": "198.51.100.7"}).status_code for _ in range(3)]
    if trusted:
        assert by_client == [200, 200, 200, 200]  # four clients behind the proxy, one counter each
        assert same_client == [200, 200, 429]
    else:
        assert by_client == [200, 200, 429, 429]  # the header is ignored: one peer, one counter
        assert same_client == [429, 429, 429]
