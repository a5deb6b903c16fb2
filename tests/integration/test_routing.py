"""Routing and resilience through the real app: retries, fallbacks, breakers, the retry budget, admin actions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.config import GatewayConfig
from gateway.state.memory import MemoryState
from tests.clock import FakeClock
from tests.conftest import KEY, running
from tests.integration.helpers import RawUpstream, wait_until
from tests.servers import serve

HEADERS = {"authorization": f"Bearer {KEY}"}
ADMIN = "sk-admin-test"
QUIET_BREAKER = {"consecutive_failures": 1000, "min_requests": 100000}


def chat(url: str, model: str, content: str = "hello", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=20)


def mock_group(*models: str, **group: Any) -> dict[str, Any]:
    return {"deployments": [{"provider": "mock", "model": m} for m in models], **group}


def routing(**options: Any) -> dict[str, Any]:
    return {"backoff": {"base_s": 0.01, "max_s": 2.0}, **options}


def test_a_500_then_success_is_retried(make_config: Callable[..., GatewayConfig]) -> None:
    config = make_config(models={"flaky": mock_group("m-flaky-1")}, routing=routing())
    with running(config) as (url, gateway):
        response = chat(url, "flaky")
        assert response.status_code == 200
        assert response.headers["x-gateway-attempts"] == "2"
        assert gateway.providers["mock"].calls["m-flaky-1"] == 2  # type: ignore[attr-defined]


def test_a_429_with_retry_after_waits_and_succeeds(make_config: Callable[..., GatewayConfig]) -> None:
    config = make_config(models={"limited": mock_group("m-flakyrl-1")}, routing=routing())
    with running(config) as (url, _):
        started = time.monotonic()
        response = chat(url, "limited")
        assert response.status_code == 200
        assert time.monotonic() - started >= 1.0  # Retry-After: 1 honoured


def test_a_hang_times_out_at_the_first_byte_timeout_and_falls_back(make_config: Callable[..., GatewayConfig]) -> None:
    models = {"hangs": mock_group("m-hang", fallbacks=["demo"])}
    # total_s far beyond the client's own 20 s: only the first-byte timeout can end the hang in time.
    timeouts = {"first_byte_s": 0.2, "connect_s": 1, "idle_s": 1, "total_s": 600}
    with running(make_config(models=models, routing=routing(retries=0, timeouts=timeouts))) as (url, gateway):
        started = time.monotonic()
        response = chat(url, "hangs")
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed >= 0.2
        assert response.headers["x-gateway-fallback"] == "hangs->demo"
        assert response.headers["x-gateway-model"] == "demo-1"
        assert gateway.metrics.registry.get_sample_value("gateway_events_total", {"type": "fallback_used"}) == 1


def test_retries_only_what_is_safe(make_config: Callable[..., GatewayConfig]) -> None:
    models = {"bad-request": mock_group("m-error-400"), "resets": mock_group("m-reset-2")}
    with running(make_config(models=models, routing=routing())) as (url, gateway):
        assert chat(url, "bad-request").status_code == 400
        calls = gateway.providers["mock"].calls  # type: ignore[attr-defined]
        assert calls["m-error-400"] == 1  # a client error is never retried
        body = {"model": "resets", "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
        text = httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS).text
        assert '"error"' in text
        assert text.rstrip().endswith("data: [DONE]")
        assert calls["m-reset-2"] == 1  # the stream had started: not retried


def test_the_retry_budget_caps_retries_during_a_full_outage(make_config: Callable[..., GatewayConfig]) -> None:
    config = make_config(
        models={"down": mock_group("m-error-503")},
        routing=routing(retries=3, retry_budget={"ratio": 0.1, "min_per_s": 0}, breaker=QUIET_BREAKER),
    )
    with running(config) as (url, gateway):
        for _ in range(40):
            assert chat(url, "down").status_code == 503
        calls = gateway.providers["mock"].calls["m-error-503"]  # type: ignore[attr-defined]
        # Without the budget: 40 requests x 4 attempts = 160 calls. With it: about 10% more than the requests.
        assert 40 < calls <= 40 + 0.1 * calls + 2
        exhausted = gateway.metrics.registry.get_sample_value(
            "gateway_events_total", {"type": "retry_budget_exhausted"}
        )
        assert exhausted
        assert exhausted >= 30


def test_context_window_and_content_policy_fallbacks(make_config: Callable[..., GatewayConfig]) -> None:
    models = {
        "small": {
            "deployments": [{"provider": "mock", "model": "small-1", "max_input_tokens": 20}],
            "context_window_fallback": "demo",
        },
        "prudish": mock_group("p-refuse", content_policy_fallback="demo"),
        "short": mock_group("s-ctx", context_window_fallback="demo"),
    }
    with running(make_config(models=models, routing=routing())) as (url, gateway):
        calls = gateway.providers["mock"].calls  # type: ignore[attr-defined]
        assert chat(url, "small", "short").headers["x-gateway-model"] == "small-1"
        long = chat(url, "small", "word " * 200)  # decided before the call, from the token count
        assert long.headers["x-gateway-model"] == "demo-1"
        assert calls["small-1"] == 1
        refused = chat(url, "prudish")
        assert refused.status_code == 200
        assert refused.headers["x-gateway-fallback"] == "prudish->demo"
        assert chat(url, "short").headers["x-gateway-model"] == "demo-1"  # the upstream said: too long


def test_a_wildcard_model_passes_a_family_through(make_config: Callable[..., GatewayConfig]) -> None:
    models = {"mock/*": {"deployments": [{"provider": "mock", "model": "*"}]}}
    with running(make_config(models=models)) as (url, _):
        response = chat(url, "mock/any-model-7")
        assert response.status_code == 200
        assert response.json()["model"] == "any-model-7"
        assert chat(url, "mock/").status_code == 404


@pytest.fixture
def toggled(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream]
) -> Iterator[tuple[str, Any, RawUpstream]]:
    up_url, up = raw_upstream
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "k"}},
        models={
            "pair": {
                "deployments": [{"provider": "up", "model": "toggle"}, {"provider": "up", "model": "gpt-4o-mini"}],
                "strategy": "round-robin",
            }
        },
        routing=routing(retries=0, breaker={"consecutive_failures": 2, "cooldown_s": 0.3, "sync_interval_s": 0.1}),
        auth={"admin_key": ADMIN},
    )
    with running(config) as (url, gateway):
        yield url, gateway, up


def toggle_calls(up: RawUpstream) -> int:
    return sum(1 for r in up.requests if r["body"].get("model") == "toggle")


def test_a_failing_deployment_opens_its_breaker_is_probed_with_backoff_and_recovers(toggled) -> None:
    url, gateway, up = toggled
    # The breakers' time moves only when the test says: however long the requests take, the cooldown has not
    # ended until the clock is advanced past it (on a loaded machine, 6 requests once outlasted a 0.3 s cooldown).
    clock = FakeClock()
    gateway.health.clock, gateway.health.wall = clock.monotonic, clock.time
    # The shared breaker's time left (its hash's TTL) is on the state backend's clock: the same one.
    assert isinstance(gateway.health.state, MemoryState)
    gateway.health.state.clock = clock.monotonic
    up.failing = True
    statuses = [chat(url, "pair").status_code for _ in range(4)]
    assert statuses.count(500) == 2  # round robin sent two to the failing one: then the breaker opened
    assert toggle_calls(up) == 2
    health = gateway.health.deployments["up/toggle"]
    assert health.breaker.state == "open"
    assert all(chat(url, "pair").status_code == 200 for _ in range(6))
    clock.advance(0.29)
    assert all(chat(url, "pair").status_code == 200 for _ in range(3))
    assert toggle_calls(up) == 2  # no traffic while open: not a moment before the cooldown (0.3 s) ends
    clock.advance(0.02)
    [chat(url, "pair") for _ in range(3)]  # one of these is the probe, and it fails
    assert toggle_calls(up) == 3
    assert health.breaker.cooldown_s() == pytest.approx(0.6)  # backoff between failed probes
    up.failing = False
    clock.advance(0.59)
    assert all(chat(url, "pair").status_code == 200 for _ in range(3))
    assert toggle_calls(up) == 3  # the doubled cooldown holds
    clock.advance(0.02)
    assert all(chat(url, "pair").status_code == 200 for _ in range(4))
    assert health.breaker.state == "closed"
    assert toggle_calls(up) >= 5  # back in rotation
    events = gateway.metrics.registry
    assert events.get_sample_value("gateway_events_total", {"type": "breaker_open"}) == 2
    assert events.get_sample_value("gateway_events_total", {"type": "breaker_close"}) == 1


def test_admin_lists_drains_undrains_and_resets(toggled) -> None:
    url, gateway, up = toggled
    admin = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.get(f"{url}/admin/deployments", headers=HEADERS).status_code == 403
    listing = httpx.get(f"{url}/admin/deployments", headers=admin).json()["data"]
    by_id = {d["id"]: d for d in listing}
    assert by_id["up/toggle"]["models"] == ["pair"]
    assert by_id["up/gpt-4o-mini"]["models"] == ["pair"]
    assert by_id["up/toggle"]["state"] == "closed"
    drained = httpx.post(f"{url}/admin/deployments/up/toggle/drain", headers=admin)
    assert drained.json()["state"] == "drained"
    before = toggle_calls(up)
    assert all(chat(url, "pair").status_code == 200 for _ in range(4))
    assert toggle_calls(up) == before
    httpx.post(f"{url}/admin/deployments/up/toggle/undrain", headers=admin)
    [chat(url, "pair") for _ in range(4)]
    assert toggle_calls(up) > before
    gateway.health.deployments["up/toggle"].breaker.force_open(time.monotonic() + 60, 0)
    assert httpx.post(f"{url}/admin/deployments/up/toggle/reset", headers=admin).json()["breaker"] == "closed"
    assert httpx.post(f"{url}/admin/deployments/nope/x/drain", headers=admin).status_code == 404


def breaking(make_config: Callable[..., GatewayConfig], webhook: dict[str, Any], **overrides: Any) -> GatewayConfig:
    """A gateway whose only model fails, so that its breaker opens after two requests: events for the webhook."""
    return make_config(
        models={"broken": mock_group("m-error-500")},
        routing=routing(
            retries=0,
            breaker={"consecutive_failures": 2, "cooldown_s": 30},
            events_webhook={"flush_interval_ms": 50, **webhook},
        ),
        **overrides,
    )


def test_events_are_posted_in_batches_to_the_webhook(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream]
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> JSONResponse:
        received.append({"headers": dict(request.headers), "body": await request.json()})
        return JSONResponse({"ok": True})

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_url:
        config = breaking(make_config, {"url": f"{hook_url}/hook", "headers": {"St2-Api-Key": "s3cret"}})
        with running(config) as (url, _):
            for _ in range(3):
                chat(url, "broken")
            assert wait_until(lambda: any(received))
    events = [e for batch in received for e in batch["body"]["events"]]
    opened = [e for e in events if e["type"] == "breaker_open"]
    assert opened
    assert opened[0]["attrs"]["deployment"] == "mock/m-error-500"
    assert received[0]["headers"]["st2-api-key"] == "s3cret"


def test_events_wait_out_a_webhook_outage_and_a_refusing_webhook_does_not_hold_them_forever(
    make_config: Callable[..., GatewayConfig], tmp_path
) -> None:
    received: list[dict[str, Any]] = []
    answers = [503, 503]  # down for two tries, then up

    async def hook(request: Request) -> JSONResponse:
        body = await request.json()
        status = answers.pop(0) if answers else 200
        if status == 200:
            received.append(body)
        return JSONResponse({}, status)

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_url:
        config = breaking(
            make_config,
            {"url": f"{hook_url}/hook", "max_backoff_s": 0.2},
            telemetry={"spool_dir": str(tmp_path / "spool")},
            auth={"admin_key": ADMIN},
        )
        with running(config) as (url, _):
            for _ in range(3):
                chat(url, "broken")
            assert wait_until(lambda: any(received), timeout=10)
            events = [e for batch in received for e in batch["events"]]
            assert [e["type"] for e in events].count("breaker_open") == 1  # after the outage, once
            answers.extend([400] * 100)  # now it refuses everything
            admin = {"authorization": f"Bearer {ADMIN}"}
            httpx.post(f"{url}/admin/deployments/mock/m-error-500/drain", headers=admin)  # one more event

            def rejected() -> bool:
                status = httpx.get(f"{url}/api/v1/telemetry/status", headers=admin).json()
                return bool(status["sinks"]["events_webhook"]["rejected"])

            assert wait_until(rejected, timeout=10)


@pytest.mark.redis
def test_a_breaker_opened_by_one_process_is_respected_by_another(tmp_path, raw_upstream) -> None:
    from tests.servers import gateway_process
    from tests.services import require_redis

    redis_url = require_redis()
    up_url, up = raw_upstream
    key_prefix_clear = __import__("redis").Redis.from_url(redis_url)
    key_prefix_clear.delete("gw:brk:up/toggle", "gw:drain:up/toggle", "gw:lat:up/toggle")
    overrides: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "k"}},
        "models": {"solo": {"deployments": [{"provider": "up", "model": "toggle"}]}},
        "routing": routing(retries=0, breaker={"consecutive_failures": 2, "cooldown_s": 60, "sync_interval_s": 0.1}),
        "state": {"backend": redis_url},
        "auth": {"admin_key": ADMIN},
    }
    with (
        gateway_process(tmp_path, name="a", **overrides) as (url_a, _),
        gateway_process(tmp_path, name="b", **overrides) as (url_b, _),
    ):
        up.failing = True
        assert [chat(url_a, "solo").status_code for _ in range(2)] == [500, 500]
        assert chat(url_a, "solo").status_code == 503  # open in A
        before = toggle_calls(up)

        def open_in_b() -> bool:
            listing = httpx.get(f"{url_b}/admin/deployments", headers={"authorization": f"Bearer {ADMIN}"})
            return any(d["id"] == "up/toggle" and d["breaker"] == "open" for d in listing.json()["data"])

        assert wait_until(open_in_b)  # B syncs every 0.1 s, however busy the machine
        response = chat(url_b, "solo")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_healthy_deployment"
        assert toggle_calls(up) == before  # B never called the upstream
    key_prefix_clear.delete("gw:brk:up/toggle")


def test_client_errors_do_not_open_the_breaker_and_in_flight_returns_to_zero(
    make_config: Callable[..., GatewayConfig],
) -> None:
    models = {"picky": mock_group("m-error-400"), "streams": mock_group("s-1"), "flaky-stream": mock_group("f-flaky-1")}
    config = make_config(models=models, routing=routing(breaker={"consecutive_failures": 2}))
    with running(config) as (url, gateway):
        for _ in range(4):
            assert chat(url, "picky").status_code == 400
        assert gateway.health.deployments["mock/m-error-400"].breaker.state == "closed"
        for model in ("streams", "flaky-stream"):  # the second fails once before its stream starts
            body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
            assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS).text.endswith("[DONE]\n\n")
        assert all(h.in_flight == 0 for h in gateway.health.deployments.values())
        assert gateway.health.deployments["mock/s-1"].ttft_s > 0


def test_each_attempt_is_a_span_of_the_record(make_config, tmp_path) -> None:
    from tests.integration.helpers import record_of, sdk_client, user

    config = make_config(
        models={"demo": {"strategy": "lowest-cost", "deployments": [
            {"provider": "mock", "model": "demo-error-503", "price": {"input": 0.1, "output": 0.1}},
            {"provider": "mock", "model": "demo-1", "price": {"input": 1.0, "output": 1.0}}]}},
        routing={"retries": 2, "backoff": {"base_s": 0.001, "max_s": 0.001}},
    )  # fmt: skip
    with running(config) as (url, _):
        raw = sdk_client(url).chat.completions.with_raw_response.create(model="demo", messages=user("hi"))
        spans = [
            s["name"] for s in json.loads(record_of(tmp_path / "gateway.db", raw.headers["x-request-id"])["spans"])
        ]
        pipeline = [name for name in spans if not name.startswith("upstream")]  # the upstream call's phases follow
        assert pipeline[-3:] == ["attempt:mock/demo-error-503:failed", "attempt:mock/demo-1", "route"]


def test_groups_that_list_the_same_deployment_each_keep_their_own_settings(
    make_config: Callable[..., GatewayConfig], db_path
) -> None:
    """One upstream target, two groups: they share its health, but each request is priced and timed as its own
    group lists the deployment (the first group's settings served both, and the second's cost was null)."""
    from tests.integration.helpers import record_of

    deployment = {"provider": "mock", "model": "demo-1"}
    models = {
        "cheap": {"deployments": [{**deployment, "price": {"input": 1, "output": 1}}]},
        "dear": {"deployments": [{**deployment, "price": {"input": 1000, "output": 1000}, "region": "eu"}]},
    }
    with running(make_config(models=models)) as (url, gateway):
        costs = {}
        for model in ("cheap", "dear"):
            answer = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                json={"model": model, "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert answer.status_code == 200
            costs[model] = record_of(db_path, answer.headers["x-gateway-request-id"])["cost_usd"]
        assert costs["cheap"] is not None
        assert costs["dear"] is not None
        assert costs["dear"] == pytest.approx(costs["cheap"] * 1000)
        targets = gateway.router.targets
        assert targets["cheap"].healths[0] is targets["dear"].healths[0]  # one upstream target, one health
