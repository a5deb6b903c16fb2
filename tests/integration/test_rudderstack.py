"""A gateway exporting to RudderStack: the write key from the environment, each request an event at the data
plane's /v1/batch, authenticated as a source; a wrong key refused there and never in the gateway's logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.conftest import KEY, running
from tests.integration.helpers import wait_until
from tests.servers import WRITE_KEY, data_plane


def test_each_request_reaches_the_data_plane_as_a_source_event(
    make_config: Callable[..., GatewayConfig], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RUDDERSTACK_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("WRONG_WRITE_KEY", "wrong-key-7Qz")
    caplog.set_level(logging.DEBUG)
    with data_plane() as (plane_url, plane):
        sink = {"type": "webhook", "data_plane_url": plane_url, "flush_interval_ms": 20, "max_backoff_s": 0.1}
        sinks = {
            "rudderstack": {**sink, "write_key": "${RUDDERSTACK_WRITE_KEY}"},
            "misconfigured": {**sink, "write_key": "${WRONG_WRITE_KEY}"},
        }
        config = make_config(telemetry={"sinks": sinks})
        with running(config) as (url, _):
            headers = {"authorization": f"Bearer {KEY}", "x-request-id": "rs-1"}
            body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers).status_code == 200
            assert wait_until(lambda: len(plane.events) == 1)
            # The misconfigured sink's batch, refused for good, is counted as such (after its 401 came back).
            rejected = 'gateway_sink_records_total{outcome="rejected",sink="misconfigured"} 1.0'
            assert wait_until(lambda: rejected in httpx.get(f"{url}/metrics").text)
    event = plane.events[0]
    assert event["properties"]["client_request_id"] == "rs-1"
    assert event["properties"]["model_requested"] == "demo"
    assert event["userId"] == "tester"
    assert plane.refused == 1
    # Neither key reaches a log line, the refusal's warning included.
    assert "misconfigured" in caplog.text
    assert WRITE_KEY not in caplog.text
    assert "wrong-key-7Qz" not in caplog.text
