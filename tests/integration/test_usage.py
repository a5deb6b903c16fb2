"""GET /admin/usage (spend and what is left, per key, team and project, on both backends, within one's own
project) and GET /v1/models narrowed to a key's allowed models."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from gateway.config import GatewayConfig
from tests.conftest import running
from tests.integration.helpers import assert_error_shape, wait_settled
from tests.services import require_redis

ADMIN = "sk-admin-bootstrap"
PIPELINE = ["auth", "ratelimit", "route"]
# $0.001 a token: a few short answers spend a few cents, enough to see.
PRICED = {"deployments": [{"provider": "mock", "model": "demo-1", "price": {"input": 1000, "output": 1000}}]}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(url: str, **fields: object) -> dict[str, Any]:
    response = httpx.post(f"{url}/admin/keys", json=fields, headers=auth(ADMIN))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def usage(url: str, key: str, **query: str) -> httpx.Response:
    return httpx.get(f"{url}/admin/usage", params=query, headers=auth(key))


def config_for(make_config: Callable[..., GatewayConfig], backend: str = "memory") -> GatewayConfig:
    limits = {"backend": backend, "rules": [{"scope": "project", "budget_usd": 100, "period": "day"}]}
    return make_config(
        pipeline=PIPELINE, limits=limits, models={"demo": PRICED}, auth={"admin_key": ADMIN, "cache_ttl_s": 0.5}
    )


def check_spend_and_isolation(url: str, settle: Callable[[], None]) -> None:
    developer = create(url, project="p1", team="t1", rpm=60, budget_usd="20/month")
    for _ in range(3):
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(developer["key"])).status_code == 200
    settle()
    billing = create(url, project="p1", role="billing")["key"]

    project = usage(url, billing).json()  # no scope, no id: the caller's own project
    assert (project["object"], project["scope"], project["id"]) == ("usage", "project", "p1")
    (day,) = project["budgets"]
    assert day["period"] == "day"
    assert day["cap_usd"] == 100
    assert 0.01 < day["spend_usd"] < 0.5  # three small answers at their real cost, reservations given back
    assert day["remaining_usd"] == pytest.approx(day["cap_usd"] - day["spend_usd"])
    assert time.time() < day["resets_at"] <= time.time() + 86_400 + 1

    response = usage(url, billing, scope="key", id=developer["id"])
    assert response.status_code == 200, response.text
    key = response.json()
    (month,) = key["budgets"]  # the key's own budget, from its row
    assert (month["period"], month["cap_usd"]) == ("month", 20)
    assert month["spend_usd"] == pytest.approx(day["spend_usd"])  # the same three requests
    assert month["remaining_usd"] == pytest.approx(20 - month["spend_usd"])
    (rpm,) = key["rate_limits"]
    assert rpm["name"] == "rpm"
    assert 56 <= rpm["remaining"] < 60  # three taken, at most a few refilled since

    # Project isolation: another project, or a key in it, is refused in OpenAI's shape.
    other = create(url, project="p2")
    error = assert_error_shape(usage(url, billing, scope="project", id="p2"), 403, code="project_not_allowed")
    assert error["type"] == "permission_error"
    assert_error_shape(usage(url, billing, scope="key", id=other["id"]), 403, code="project_not_allowed")
    assert_error_shape(usage(url, billing, scope="team", id="t9"), 403, code="project_not_allowed")
    # The matrix gives usage to billing (and admin) only.
    for role in ("developer", "viewer"):
        caller = create(url, project="p1", role=role)["key"]
        assert_error_shape(usage(url, caller), 403, code="role_not_allowed")
    # An admin reads any project; a bad scope names its parameter.
    assert usage(url, ADMIN, scope="project", id="p2").json()["budgets"][0]["spend_usd"] == 0
    assert assert_error_shape(usage(url, ADMIN, scope="galaxy"), 400)["param"] == "scope"
    assert_error_shape(usage(url, ADMIN, scope="key", id="no-such-key"), 404)


def test_usage_on_the_memory_backend(make_config: Callable[..., GatewayConfig]) -> None:
    with running(config_for(make_config)) as (url, _):
        check_spend_and_isolation(url, lambda: None)  # memory settles before the answer leaves


@pytest.mark.redis
def test_usage_on_redis_reads_without_writing(make_config: Callable[..., GatewayConfig]) -> None:
    redis_url = require_redis()
    client = redis.Redis.from_url(redis_url)
    stale = client.keys("{gw:rl}:*")
    if stale:
        client.delete(*stale)
    with running(config_for(make_config, redis_url)) as (url, gateway):
        check_spend_and_isolation(url, lambda: wait_settled(gateway))  # settlements leave in the background
        before = sorted(client.keys("{gw:rl}:*"))
        # A project nobody has spent in: read as zero, and the read leaves no counter behind.
        assert usage(url, ADMIN, scope="project", id="p3").json()["budgets"][0]["spend_usd"] == 0
        assert sorted(client.keys("{gw:rl}:*")) == before


def test_models_list_shows_only_allowed_models(make_config: Callable[..., GatewayConfig]) -> None:
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _):
        limited = create(url, project="p1", allowed_models=["demo"])["key"]
        everything = create(url, project="p1")["key"]
        listed = httpx.get(f"{url}/v1/models", headers=auth(limited)).json()["data"]
        assert [m["id"] for m in listed] == ["demo"]
        full = httpx.get(f"{url}/v1/models", headers=auth(everything)).json()["data"]
        assert {m["id"] for m in full} == {"demo", "demo-embedding", "slow-stream"}
        assert httpx.get(f"{url}/v1/models/demo", headers=auth(limited)).json()["id"] == "demo"
        response = httpx.get(f"{url}/v1/models/slow-stream", headers=auth(limited))
        assert_error_shape(response, 404, code="model_not_found")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_usage_reset_starts_the_budget_anew(make_config: Callable[..., GatewayConfig], backend: str) -> None:
    url_of_backend = require_redis() if backend == "redis" else "memory"
    if backend == "redis":
        client = redis.Redis.from_url(url_of_backend)
        stale = client.keys("{gw:rl}:*")
        if stale:
            client.delete(*stale)
    with running(config_for(make_config, url_of_backend)) as (url, gateway):
        key = create(url, project="p1")["key"]
        for _ in range(2):
            assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
        wait_settled(gateway)
        assert usage(url, ADMIN, scope="project", id="p1").json()["budgets"][0]["spend_usd"] > 0
        reset = httpx.post(f"{url}/admin/usage/reset", json={"scope": "project", "id": "p1"}, headers=auth(ADMIN))
        assert reset.status_code == 200, reset.text
        (before,) = reset.json()["budgets"]
        assert before["period"] == "day"
        assert before["spend_usd_before"] > 0
        wait_settled(gateway)
        assert usage(url, ADMIN, scope="project", id="p1").json()["budgets"][0]["spend_usd"] == 0
        answer = httpx.post(f"{url}/admin/usage/reset", json={"scope": "team", "id": "nobody"}, headers=auth(ADMIN))
        assert answer.status_code == 400  # no budget there to reset
