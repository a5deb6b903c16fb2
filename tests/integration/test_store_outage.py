"""PostgreSQL lost mid-run: the gateway's connections to it are cut and new ones refused for a while (a TCP proxy
between them stands in for the server going away), then it comes back. No request fails, and every record reaches
the table once — held in the store's outbox and its disk spool meanwhile."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.conftest import KEY, running
from tests.faults import FaultyProxy
from tests.integration.helpers import wait_until
from tests.services import drop_schema, postgres_fetch, require_postgres

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def _count(dsn: str, schema: str) -> tuple[int, int]:
    (row,) = postgres_fetch(dsn, f"SELECT count(*), count(DISTINCT id) FROM {schema}.model_cost_logs")
    return row[0], row[1]


@contextlib.contextmanager
def _schema(dsn: str) -> Iterator[str]:
    name = f"gw_outage_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        drop_schema(dsn, name)


def test_postgres_cut_mid_run_fails_no_request_and_loses_no_record(make_config):
    dsn = require_postgres()
    url = urlsplit(dsn)
    with _schema(dsn) as schema, FaultyProxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        netloc = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
        through = urlunsplit((url.scheme, f"{netloc}127.0.0.1:{proxy.port}", url.path, f"schema={schema}", ""))
        config = make_config(telemetry={"store": through, "flush_interval_ms": 20, "batch_size": 20})
        sent = 0
        with running(config) as (base, gateway), httpx.Client(base_url=base) as client:

            def load(seconds: float) -> None:
                nonlocal sent
                end, first = time.monotonic() + seconds, sent
                # As long as asked and at least 25 requests a second's worth: a slow machine sends as many.
                while time.monotonic() < end or sent - first < 25 * seconds:
                    response = client.post(
                        "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
                    )
                    assert response.status_code == 200, response.text
                    sent += 1
                    time.sleep(0.005)

            load(1.0)
            assert wait_until(lambda: _count(dsn, schema)[0] > 0)
            proxy.cut()
            load(5.0)
            store_outbox = next(o for o in gateway.outboxes if o.name == "store")
            assert store_outbox.stats()["spooled"] > 0  # the records waited on disk
            ready = client.get("/health/ready")
            assert ready.status_code == 200  # every request succeeds: a telemetry outage is no reason to go unready
            assert ready.json()["checks"]["store"].startswith(("down", "spooling"))
            proxy.restore()
            load(1.0)
            assert wait_until(lambda: _count(dsn, schema)[0] >= sent, 30)
            time.sleep(0.3)
            total, distinct = _count(dsn, schema)
        assert sent > 100
        assert total == distinct == sent
