"""PostgreSQL hung mid-run (a proxy in front of it stops forwarding, connections stay open and new ones are taken
and left there, as by a server that is SIGSTOPped): requests go on at their usual speed, /health/ready, the
telemetry status and gateway_component_state say the store is stalled, what the gateway holds stays bounded
(records wait on disk, not in memory; no socket opened per write or ping left to pile up), and once PostgreSQL
answers again every record arrives, once. The outage by a cut connection is test_store_outage.py's."""

from __future__ import annotations

import os
import time
import uuid

import httpx

from tests.conftest import KEY, running
from tests.faults import FaultyProxy
from tests.integration.helpers import wait_until
from tests.services import drop_schema, postgres_fetch, require_postgres

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {KEY}"}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def count(dsn: str, schema: str) -> int:
    return int(postgres_fetch(dsn, f"SELECT count(*) FROM {schema}.model_cost_logs")[0][0])


def test_a_hung_postgresql_delays_no_request_holds_a_bounded_amount_and_loses_no_record(make_config) -> None:
    dsn = require_postgres()
    schema = f"gw_hung_{uuid.uuid4().hex[:10]}"
    try:
        with FaultyProxy.before(dsn) as proxy:
            store = f"{proxy.url(dsn)}?schema={schema}"
            config = make_config(
                telemetry={
                    "store": store,
                    "flush_interval_ms": 20,
                    "batch_size": 20,
                    "write_timeout_s": 2.0,  # a request that waited on the store would take this long
                    "query_timeout_s": 1.0,
                },
                auth={"admin_key": "sk-admin"},
            )
            sent = 0
            with running(config) as (base, _), httpx.Client(base_url=base, timeout=30) as client:
                admin = {"authorization": "Bearer sk-admin"}

                def load(seconds: float) -> float:
                    """Requests for `seconds`; the slowest one's time."""
                    nonlocal sent
                    end, slowest = time.monotonic() + seconds, 0.0
                    while time.monotonic() < end:
                        started = time.monotonic()
                        answer = client.post(
                            "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
                        )
                        slowest = max(slowest, time.monotonic() - started)
                        assert answer.status_code == 200, answer.text
                        sent += 1
                        time.sleep(0.005)
                    return slowest

                load(1.0)
                assert wait_until(
                    lambda: postgres_fetch(dsn, f"SELECT count(*) FROM {schema}.model_cost_logs")[0][0] > 0
                )
                stored = client.post("/v1/responses", json={"model": "demo", "input": "hi"}, headers=AUTH).json()["id"]
                sent += 1  # a record too
                assert wait_until(lambda: client.get(f"/v1/responses/{stored}", headers=AUTH).status_code == 200)
                proxy.freeze()
                load(2.0)
                fds = open_fds()
                slowest = load(4.0)
                # Below write_timeout_s with room for a busy machine: a request that waited for the store takes it all.
                assert slowest < 1.5, f"a request waited {slowest:.2f} s on the hung store"
                assert open_fds() - fds < 10, "sockets pile up while the store hangs"
                status = client.get("/api/v1/telemetry/status", headers=admin).json()["sinks"]["store"]
                assert status["state"] in ("stalled", "spooling"), status
                assert status["spooled"] > 0
                assert status["queued"] < 1_000, status  # the rest waits on disk
                ready = client.get("/health/ready")
                assert ready.status_code == 200
                assert ready.json()["checks"]["store"].startswith(("stalled", "spooling")), ready.json()
                # The Responses API: a turn stored answers at once (saved in the background); what must read or
                # change the table answers 503 within telemetry.query_timeout_s, never hangs.
                started = time.monotonic()
                turn = client.post("/v1/responses", json={"model": "demo", "input": "hi", "store": True}, headers=AUTH)
                assert turn.status_code == 200
                sent += 1
                assert time.monotonic() - started < 1.5
                unknown = "resp_" + uuid.uuid4().hex
                reads = [("GET", f"/v1/responses/{unknown}"), ("GET", f"/v1/responses/{unknown}/input_items"),
                         ("DELETE", f"/v1/responses/{stored}")]  # fmt: skip
                for method, path in reads:
                    started = time.monotonic()
                    answer = client.request(method, path, headers=AUTH)
                    assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
                    assert time.monotonic() - started < 1.0 + 2.0, (method, path)  # query_timeout_s and room
                metrics = client.get("/metrics").text
                assert 'gateway_component_state{component="store",state="ok"} 0.0' in metrics
                proxy.thaw()
                load(1.0)

                def arrived() -> bool:
                    return count(dsn, schema) >= sent

                assert wait_until(arrived, 60)
                time.sleep(0.5)
                (row,) = postgres_fetch(dsn, f"SELECT count(*), count(DISTINCT id) FROM {schema}.model_cost_logs")
            assert sent > 100
            assert row[0] == row[1] == sent
    finally:
        drop_schema(dsn, schema)
