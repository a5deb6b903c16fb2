"""The real `gateway serve` process: graceful shutdown and several workers behind one /metrics."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import KEY
from tests.integration.helpers import wait_until
from tests.servers import gateway_process

HEADERS = {"authorization": f"Bearer {KEY}"}


def test_sigterm_drains_in_flight_streams_and_flushes_telemetry(tmp_path):
    # drain_delay_s: how long readiness says 503 before the listener closes; long enough to see it on a busy machine.
    with gateway_process(tmp_path, server={"drain_delay_s": 3, "drain_timeout_s": 30}) as (url, proc):
        received: list[str] = []
        # 30 ms between chunks and ~100 chunks: still streaming when the signal comes, however busy the machine.
        words = " ".join(["word"] * 100)

        def stream() -> None:
            body = {"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": words}]}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=60) as r:
                received.extend(line for line in r.iter_lines() if line)

        client = threading.Thread(target=stream)
        client.start()
        assert wait_until(lambda: len(received) > 0)  # the stream is under way
        proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 503)
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        assert ready.json()["checks"]["draining"] == "yes"
        assert not received or received[-1] != "data: [DONE]"  # not over yet: the drain waits for it
        client.join(timeout=60)
        assert proc.wait(timeout=60) == 0
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
