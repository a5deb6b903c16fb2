"""The real `gateway serve` process: graceful shutdown and several workers behind one /metrics."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import KEY
from tests.servers import gateway_process

HEADERS = {"authorization": f"Bearer {KEY}"}


def test_sigterm_drains_in_flight_streams_and_flushes_telemetry(tmp_path):
    with gateway_process(tmp_path, server={"drain_delay_s": 0.6, "drain_timeout_s": 10}) as (url, proc):
        received: list[str] = []

        def stream() -> None:
            body = {"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "a b c d e f"}]}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=10) as r:
                received.extend(line for line in r.iter_lines() if line)

        client = threading.Thread(target=stream)
        client.start()
        time.sleep(0.1)  # the stream is under way (30 ms between chunks, about 12 chunks)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        ready = httpx.get(f"{url}/health/ready", timeout=2)
        assert ready.status_code == 503
        assert ready.json()["checks"]["draining"] == "yes"
        client.join(timeout=10)
        assert proc.wait(timeout=10) == 0
    assert received[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in received)
    rows = sqlite3.connect(tmp_path / "gateway.db").execute(
        "SELECT model_requested, status, stream FROM model_cost_logs"
    )
    assert ("slow-stream", 200, 1) in rows.fetchall()


def test_several_workers_report_together_on_metrics(tmp_path):
    with gateway_process(tmp_path, "--workers", "2") as (url, _):
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(40):  # a new connection each time, so both workers take some
            assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    samples = [line for line in text.splitlines() if line.startswith("gateway_requests_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in samples) == 40


@pytest.mark.parametrize("config", ["pipeline: [auth, nope, route]\n", "server: {port: x}\n"])
def test_serve_refuses_a_broken_config_with_the_key_path(tmp_path, config):
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}: " in result.stderr
    assert "Traceback" not in result.stderr
