"""One request whose values no column takes must not stop the store: a body with a dict for `model` is recorded
(its model as text), the records after it too, and a record a store refuses (left untyped in the spool by an older
version) is set aside in the dead-letter file on replay, counted, and never replayed again."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.sinks.deadletter import FILE_NAME
from gateway.sinks.spool import Spool
from gateway.store.base import RECORD_COLUMNS
from tests.conftest import KEY, running
from tests.integration.helpers import wait_until
from tests.services import drop_schema, postgres_fetch, require_postgres

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"authorization": "Bearer sk-admin"}


@contextlib.contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[tuple[str, Callable[[], list[tuple[str, str, int]]]]]:
    """(telemetry.store, rows()): each row (id, model_requested, status)."""
    if kind == "sqlite":
        path = tmp_path / "gateway.db"

        def rows() -> list[tuple[str, str, int]]:
            if not path.exists():
                return []
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return conn.execute("SELECT id, model_requested, status FROM model_cost_logs").fetchall()

        yield f"sqlite:///{path}", rows
        return
    dsn = require_postgres()
    schema = f"gw_poison_{uuid.uuid4().hex[:10]}"

    def pg_rows() -> list[tuple[str, str, int]]:
        try:
            found = postgres_fetch(dsn, f"SELECT id, model_requested, status FROM {schema}.model_cost_logs")
        except Exception:  # not created yet
            return []
        return [tuple(r) for r in found]

    try:
        yield f"{dsn}?schema={schema}", pg_rows
    finally:
        drop_schema(dsn, schema)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_body_no_column_takes_is_recorded_as_text_and_the_store_goes_on(
    kind: str, make_config: Callable[..., GatewayConfig], tmp_path: Path
) -> None:
    with store_url(kind, tmp_path) as (url, rows):
        config = make_config(telemetry={"store": url}, auth={"admin_key": "sk-admin"})
        with running(config) as (base, gateway), httpx.Client(base_url=base) as client:
            # Without a key the body is never read (401); with one, it is refused by validation (400) and its
            # record keeps what it asked for, as text.
            poison = {"model": {"a": 1}, "messages": []}
            assert client.post("/v1/chat/completions", json=poison).status_code == 401
            bad = client.post("/v1/chat/completions", json=poison, headers={"authorization": f"Bearer {KEY}"})
            assert bad.status_code == 400
            for _ in range(5):
                assert client.post(
                    "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
                ).is_success
            assert wait_until(lambda: len(rows()) == 7, 10)
            store = client.get("/api/v1/telemetry/status", headers=ADMIN).json()["sinks"]["store"]
            assert store["state"] == "ok"
            assert store["dead_lettered"] == 0
        models = sorted(model for _, model, _ in rows())
        assert models == ["", *["demo"] * 5, '{"a":1}']


def old_untyped_spool(folder: Path) -> list[str]:
    """What a process of an older version left in the store's spool: two good records around one whose model is a
    dict (the record no column takes), and it stopped before replaying them."""
    ids = [uuid.uuid4().hex for _ in range(3)]
    base = {c: "" for c in RECORD_COLUMNS} | {
        "ts": 1_700_000_000.0, "endpoint": "chat/completions", "status": 200, "stream": False, "latency_ms": 1.0,
        "upstream_ms": 0.5, "ttfb_ms": None, "ttft_ms": None, "overhead_ms": 0.1, "prompt_tokens": 1,
        "completion_tokens": 1, "cached_tokens": 0, "reasoning_tokens": 0, "total_tokens": 2, "cost_usd": None,
        "spans": [], "tags": {}, "attempts": 1, "guardrails": [], "metadata": {}, "model_requested": "demo",
        "saved_usd": None,
    }  # fmt: skip
    records = [base | {"id": ids[0]}, base | {"id": ids[1], "model_requested": {"a": 1}}, base | {"id": ids[2]}]
    spool = Spool(folder, max_bytes=1 << 20)
    spool.open()
    assert spool.append(records) == 3
    spool.close()
    return ids


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_record_the_store_refuses_on_replay_is_set_aside_counted_and_never_replayed_again(
    kind: str, make_config: Callable[..., GatewayConfig], tmp_path: Path
) -> None:
    good1, poison, good2 = old_untyped_spool(tmp_path / "spool" / "store")
    with store_url(kind, tmp_path) as (url, rows):
        config = make_config(telemetry={"store": url}, auth={"admin_key": "sk-admin"})
        with running(config) as (base, _), httpx.Client(base_url=base) as client:
            assert wait_until(lambda: {good1, good2} <= {r[0] for r in rows()}, 10)
            status = client.get("/api/v1/telemetry/status", headers=ADMIN).json()["sinks"]["store"]
            assert status["dead_lettered"] == 1
            assert "dict" in status["last_refusal"] or "DataError" in status["last_refusal"]
            metrics = client.get("/metrics").text
            assert 'gateway_sink_records_total{outcome="dead_lettered",sink="store"} 1.0' in metrics
            (line,) = (tmp_path / "spool" / "store" / FILE_NAME).read_bytes().splitlines()
            assert orjson.loads(line)["record"]["id"] == poison
            assert poison not in {r[0] for r in rows()}
            for _ in range(3):  # and what comes after is written as usual
                assert client.post(
                    "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"}
                ).is_success
            assert wait_until(lambda: len(rows()) == 5, 10)
        # A restart replays nothing: the spool was consumed, the poison set aside.
        with running(config) as (base, gateway):
            store = next(o for o in gateway.outboxes if o.name == "store")
            assert wait_until(lambda: store.stats()["state"] == "ok", 5)
            assert store.stats()["spooled"] == 0
            assert store.stats()["sent"] == 0
        ids = [r[0] for r in rows()]
        assert len(ids) == len(set(ids))
