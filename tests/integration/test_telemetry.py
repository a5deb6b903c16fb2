"""What each request leaves behind: its record (tokens, cost, latencies, spans), the access log, the metrics."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from gateway.config import GatewayConfig
from tests.conftest import KEY, running
from tests.integration.conftest import upstream_overrides
from tests.integration.helpers import RawUpstream, record_of, wait_until
from tests.services import free_port, require_redis

HEADERS = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "price me"}]}


def test_the_record_carries_usage_cost_latencies_and_spans(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream], db_path: Path
) -> None:
    with running(make_config(**upstream_overrides(raw_upstream[0]))) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**HEADERS, "x-request-id": "rec-1"})
        assert response.status_code == 200
        record = record_of(db_path, "rec-1")
        # The first request opened the connection to the upstream; the next one finds it in the pool.
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**HEADERS, "x-request-id": "rec-1b"})
        pooled = record_of(db_path, "rec-1b")
    # The upstream reports 11 prompt tokens of which 5 cached, 3 completion tokens of which 1 reasoning;
    # gpt-4o-mini is priced at 0.15 input, 0.075 cached input, 0.60 output per million.
    assert (record["prompt_tokens"], record["cached_tokens"]) == (11, 5)
    assert (record["completion_tokens"], record["reasoning_tokens"]) == (3, 1)
    assert record["cost_usd"] == pytest.approx((6 * 0.15 + 5 * 0.075 + 3 * 0.60) / 1e6)
    assert record["usage_source"] == "upstream"
    assert (record["key_name"], record["project"], record["team"]) == ("tester", "p1", "t1")
    assert (record["model_requested"], record["model_served"], record["provider"]) == ("gpt-4o-mini",) * 2 + ("up",)
    assert record["deployment"] == "up/gpt-4o-mini"
    assert record["status"] == 200
    assert record["error_type"] == ""
    assert record["latency_ms"] >= record["upstream_ms"] > 0
    assert record["overhead_ms"] == pytest.approx(record["latency_ms"] - record["upstream_ms"], abs=0.01)
    assert record["ttfb_ms"] > 0
    spans = json.loads(record["spans"])
    names = ["auth", "attempt:up/gpt-4o-mini", "route", "upstream", "upstream.first_byte", "upstream.body"]
    assert [span["name"] for span in spans] == [*names, "upstream.connect"]
    upstream, first_byte, body, connect = spans[3:]
    # The upstream call's phases tile it: first byte, then the body, from the request sent to the last byte.
    assert upstream["start_ms"] == first_byte["start_ms"] > 0
    assert first_byte["ms"] + body["ms"] == pytest.approx(upstream["ms"], abs=0.001)
    assert upstream["ms"] == pytest.approx(record["upstream_ms"], abs=0.01)
    # Opening the connection is part of the wait for the first byte.
    assert connect["ms"] > 0
    assert connect["start_ms"] >= first_byte["start_ms"]
    assert connect["start_ms"] + connect["ms"] <= first_byte["start_ms"] + first_byte["ms"]
    assert [span["name"] for span in json.loads(pooled["spans"])] == names


def test_a_deployment_price_overrides_the_table(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream], db_path: Path
) -> None:
    overrides = upstream_overrides(raw_upstream[0])
    overrides["models"]["gpt-4o-mini"]["deployments"][0]["price"] = {"input": 1.0, "output": 2.0}
    with running(make_config(**overrides)) as (url, _):
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**HEADERS, "x-request-id": "rec-2"})
        record = record_of(db_path, "rec-2")
    assert record["cost_usd"] == pytest.approx((11 * 1.0 + 3 * 2.0) / 1e6)  # no cached price: input's


def test_an_unpriced_model_is_recorded_with_no_cost(gateway_server, db_path: Path) -> None:
    url, _ = gateway_server
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    httpx.post(f"{url}/v1/chat/completions", json=body, headers={**HEADERS, "x-request-id": "rec-3"})
    record = record_of(db_path, "rec-3")
    assert record["cost_usd"] is None
    assert record["prompt_tokens"] > 0


def test_access_log_has_one_json_line_per_request_and_no_secret(make_config: Callable[..., GatewayConfig]) -> None:
    from gateway.app import build_app
    from tests.servers import serve

    log = io.BytesIO()
    app = build_app(make_config(server={"access_log": True}), access_log_stream=log)
    with serve(app) as url:
        body = {"model": "demo", "messages": [{"role": "user", "content": "secret prompt text"}]}
        httpx.post(f"{url}/v1/chat/completions", json=body, headers={**HEADERS, "x-request-id": "log-1"})
        httpx.post(f"{url}/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-wrong-key"})
        assert wait_until(lambda: log.getvalue().count(b"\n") == 2)
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(line["client_request_id"], line["status"]) for line in lines] == [("log-1", 200), ("", 401)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", line["id"]) for line in lines)  # the gateway's ids
    assert lines[1]["error_type"] == "invalid_api_key"  # the code the client saw
    text = log.getvalue().decode()
    assert KEY not in text
    assert "sk-wrong-key" not in text
    assert "secret prompt text" not in text


def test_metrics_count_requests_tokens_and_errors_with_bounded_labels(gateway_server) -> None:
    url, _ = gateway_server
    ok = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        assert httpx.post(f"{url}/v1/chat/completions", json=ok, headers=HEADERS).status_code == 200
    unknown = {"model": "no-such-model-1234", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=unknown, headers=HEADERS).status_code == 404
    text = httpx.get(f"{url}/metrics").text
    assert (
        'gateway_requests_total{endpoint="chat/completions",model="demo",provider="mock",status_class="2xx"} 3.0'
        in text
    )
    assert 'model="unknown",provider="none",status_class="4xx"} 1.0' in text
    assert 'gateway_errors_total{domain="client",type="model_not_found"} 1.0' in text
    assert 'gateway_tokens_total{endpoint="chat/completions",kind="prompt",model="demo",provider="mock"}' in text
    assert 'gateway_filter_duration_seconds_count{filter="auth"} 4.0' in text
    assert "gateway_overhead_seconds_bucket" in text
    assert "gateway_requests_in_flight 0.0" in text
    assert "no-such-model-1234" not in text
    assert KEY not in text


def test_ready_reports_each_backend(make_config: Callable[..., GatewayConfig]) -> None:
    with running(make_config()) as (url, _):
        response = httpx.get(f"{url}/health/ready")
        assert response.status_code == 200
        checks = response.json()["checks"]
        assert (checks["draining"], checks["state"], checks["store"], checks["policies"]) == ("no", "ok", "ok", "ok")
        assert httpx.get(f"{url}/health/live").json() == {"status": "ok"}


def test_ready_reports_redis_unreachable_and_stays_ready(make_config: Callable[..., GatewayConfig]) -> None:
    config = make_config(state={"backend": f"redis://127.0.0.1:{free_port()}/0"})
    with running(config) as (url, _):
        response = httpx.get(f"{url}/health/ready")
        assert response.status_code == 200
        assert response.json()["checks"]["state"].startswith("down")
        # The proxy itself keeps serving: state is not on this request path yet.
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS).status_code == 200


@pytest.mark.redis
def test_ready_with_a_real_redis(make_config: Callable[..., GatewayConfig]) -> None:
    with running(make_config(state={"backend": require_redis()})) as (url, _):
        response = httpx.get(f"{url}/health/ready")
        assert response.status_code == 200
        assert response.json()["checks"]["state"] == "ok"


def test_traceparent_is_accepted_recorded_and_propagated_upstream(make_config, upstream, tmp_path: Path) -> None:
    url_up, up = upstream
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{url_up}/v1", "api_key": "sk-up"}},
        models={"gpt-4o": {"deployments": [{"provider": "up", "model": "gpt-4o"}]}},
    )
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with running(config) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{trace}-{parent}-01"},
        )  # fmt: skip
        sent = up.requests[-1]["headers"]["traceparent"]
        assert sent.startswith(f"00-{trace}-")
        assert not sent.endswith(f"{parent}-01")
        record = record_of(tmp_path / "gateway.db", raw.headers["x-request-id"])
        assert (record["trace_id"], record["parent_span_id"]) == (trace, parent)
        other = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        new_trace = record_of(tmp_path / "gateway.db", other.headers["x-request-id"])["trace_id"]
        assert len(new_trace) == 32
        assert new_trace != trace
        assert up.requests[-1]["headers"]["traceparent"].startswith(f"00-{new_trace}-")


def test_telemetry_status_shows_the_queues(make_config) -> None:
    admin = "sk-admin-bootstrap"
    with running(make_config(auth={"admin_key": admin})) as (url, gateway):
        httpx.post(f"{url}/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]},
                   headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
        assert wait_until(lambda: gateway.queue.written >= 1)
        status = httpx.get(f"{url}/api/v1/telemetry/status", headers={"Authorization": f"Bearer {admin}"}).json()
        records = status["records"]
        assert records["written"] >= 1
        assert records["dropped"] == 0
        assert records["capacity"] == gateway.config.telemetry.queue_size
        assert records["sinks"] == ["store", "tail"]
        assert records["last_error"] is None
        store = status["sinks"]["store"]  # the store's own outbox: what it sent, and nothing waiting on disk
        assert wait_until(lambda: gateway.outboxes[0].stats()["sent"] >= 1)
        assert (store["state"], store["dropped"], store["spooled"]) == ("ok", 0, 0)
        developer = httpx.get(f"{url}/api/v1/telemetry/status", headers={"Authorization": f"Bearer {KEY}"})
        assert developer.status_code == 403
