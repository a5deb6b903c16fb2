"""/health/ready is 503 only when this replica cannot serve: draining, no usable configuration, no deployment
available. A store, a state backend or a sink that is down or hung is reported (in the body and in
gateway_component_state), and the replica stays ready while its requests succeed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.faults import FaultyProxy
from tests.integration.helpers import wait_until
from tests.services import drop_schema, require_postgres, require_redis

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"authorization": f"Bearer {KEY}"}


def state_of(metrics: str, component: str) -> str:
    """The state gateway_component_state says a component is in (the one sample at 1)."""
    prefix = f'gateway_component_state{{component="{component}",state="'
    lines = [line for line in metrics.splitlines() if line.startswith(prefix) and line.endswith(" 1.0")]
    assert len(lines) == 1, (component, lines)
    return lines[0][len(prefix) :].split('"')[0]


def test_a_healthy_gateway_is_ready_and_says_what_each_part_is(make_config: Callable[..., GatewayConfig]) -> None:
    with running(make_config()) as (url, _):
        response = httpx.get(f"{url}/health/ready")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "checks": {
                "draining": "no", "config": "ok", "deployments": "3 of 3 available", "state": "ok", "store": "ok",
                "sinks": {"event_log": "ok"}, "policies": "ok",
            },
        }  # fmt: skip
        metrics = httpx.get(f"{url}/metrics").text
        assert "gateway_ready 1.0" in metrics
        assert state_of(metrics, "store") == "ok"
        assert state_of(metrics, "state_backend") == "ok"


@pytest.mark.parametrize("fault", ["cut", "freeze"])
def test_a_store_down_or_hung_is_reported_and_the_replica_stays_ready(
    make_config: Callable[..., GatewayConfig], fault: str
) -> None:
    dsn = require_postgres()
    schema = f"gw_ready_{uuid.uuid4().hex[:10]}"
    try:
        with FaultyProxy.before(dsn) as proxy:
            config = make_config(telemetry={"store": f"{proxy.url(dsn)}?schema={schema}"})
            with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
                getattr(proxy, fault)()
                for _ in range(5):
                    assert client.post("/v1/chat/completions", json=CHAT, headers=HEADERS).status_code == 200
                expected = "down" if fault == "cut" else "stalled"

                def reported() -> bool:
                    return client.get("/health/ready").json()["checks"]["store"].startswith(expected)

                assert wait_until(reported, 20)
                started = time.monotonic()
                ready = client.get("/health/ready")
                assert time.monotonic() - started < 5  # bounded: a probe must not wait on a hung store
                assert ready.status_code == 200
                assert ready.json()["status"] == "ok"
                metrics = client.get("/metrics").text
                assert "gateway_ready 1.0" in metrics
                assert state_of(metrics, "store") in ("down", "stalled", "spooling")
                if fault == "freeze":
                    proxy.thaw()
                else:
                    proxy.restore()
                assert wait_until(lambda: client.get("/health/ready").json()["checks"]["store"] == "ok", 60)
    finally:
        drop_schema(dsn, schema)


def test_a_hung_state_backend_is_reported_and_the_replica_stays_ready(
    make_config: Callable[..., GatewayConfig],
) -> None:
    redis = require_redis()
    with FaultyProxy.before(redis) as proxy, running(make_config(state={"backend": proxy.url(redis)})) as (url, _):
        assert httpx.get(f"{url}/health/ready").json()["checks"]["state"] == "ok"
        proxy.freeze()
        response = httpx.get(f"{url}/health/ready", timeout=10)
        assert response.status_code == 200
        assert response.json()["checks"]["state"].startswith("stalled")
        assert state_of(httpx.get(f"{url}/metrics").text, "state_backend") == "stalled"
        proxy.thaw()
        proxy.cut()
        response = httpx.get(f"{url}/health/ready", timeout=10)
        assert response.status_code == 200
        assert response.json()["checks"]["state"].startswith("down")


def test_no_deployment_available_is_the_one_backend_reason_to_be_unready(
    make_config: Callable[..., GatewayConfig],
) -> None:
    with running(make_config()) as (url, gateway):
        deployments = list(gateway.health.deployments.values())
        for health in deployments[1:]:
            health.drained = True
        deployments[0].breaker.force_open(time.monotonic() + 600, 0)
        response = httpx.get(f"{url}/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["deployments"].startswith("none available")
        assert "gateway_ready 0.0" in httpx.get(f"{url}/metrics").text
        deployments[1].drained = False  # one is enough
        assert httpx.get(f"{url}/health/ready").status_code == 200


def test_a_configuration_with_no_usable_model_is_unready(make_config: Callable[..., GatewayConfig]) -> None:
    gateway = Gateway(make_config())
    gateway.models = {}
    ready, checks = gateway.ready.report()
    assert not ready
    assert checks["config"].startswith("unusable")
    gateway.models = {"demo": object()}  # type: ignore[dict-item]
    gateway.draining = True
    ready, checks = gateway.ready.report()
    assert not ready
    assert checks["draining"] == "yes"
