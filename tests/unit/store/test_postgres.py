"""What only the PostgreSQL store does: COPY of big batches, reconnection, migrations under a lock, day partitions."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import orjson
import pytest

from gateway.store.base import RecordsRefused, StoreUnavailable, open_store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import migrations
from tests.conftest import KEY, running
from tests.services import free_port
from tests.unit.store.conftest import PostgresSchemas, record

pytestmark = pytest.mark.anyio
DAY = 86_400


async def tables(pg: PostgresSchemas, schema: str) -> set[str]:
    rows = await pg.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
    return {row[0] for row in rows}


async def partitions(pg: PostgresSchemas, schema: str) -> list[str]:
    rows = await pg.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid ="
        " i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = 'model_cost_logs'"
        " AND n.nspname = $1",
        schema,
    )
    return sorted(row[0] for row in rows)


def day_name(ts: float) -> str:
    return "model_cost_logs_p" + time.strftime("%Y%m%d", time.gmtime(ts))


async def test_a_batch_of_5000_records_goes_in_one_copy(pg):
    store = pg.store()
    await store.open()
    now = time.time()
    batch = [record(i, project=f"p{i % 3}", ts=now - i / 1000) for i in range(5000)]
    await store.write(batch)
    back = await store.recent(limit=10_000)
    assert len(back) == 5000
    assert back[0] == batch[0]
    assert len(await store.recent(limit=10_000, project="p1")) == 1667


async def test_a_batch_sent_again_after_an_unsure_failure_or_a_restart_is_not_written_twice(pg):
    schema = pg.new_schema()
    store = pg.store(schema)
    await store.open()
    now = time.time()
    first = [record(i, ts=now) for i in range(3)]
    await store.write(first)  # the first write after opening already checks
    store._unsure["model_cost_logs"].failed(first)  # as after a connection lost mid-COPY: they may or may not be in
    await store.write([*first, record(3, ts=now)])
    assert not store._unsure["model_cost_logs"].about(first)  # and the next write is a plain COPY again
    await store.write([record(4, ts=now)])
    restarted = pg.store(schema)  # a new process replaying its spool
    await restarted.open()
    await restarted.write([record(4, ts=now), record(5, ts=now)])
    ids = [r["id"] for r in await store.recent(limit=100)]
    assert sorted(ids) == [f"r{i}" for i in range(6)]


async def test_events_sent_again_after_an_unsure_failure_or_a_restart_are_not_written_twice(pg):
    schema = pg.new_schema()
    store = pg.store(schema)
    await store.open()
    now = time.time()

    def event(i: int) -> dict:
        return {"id": f"e{i}", "ts": now + i, "type": "breaker_opened", "attrs": {"deployment": "d"}}

    await store.write_events([event(0), event(1)])  # the first write after opening checks
    assert not store._unsure["event_logs"].about([event(1)])
    store._unsure["event_logs"].failed([event(1)])  # as after a connection lost mid-COPY
    await store.write_events([event(1), event(2)])
    await store.write_events([event(3)])  # a plain COPY again
    restarted = pg.store(schema)
    await restarted.open()
    await restarted.write_events([event(3), event(4)])
    assert sorted(e["id"] for e in await store.events(limit=100)) == [f"e{i}" for i in range(5)]


async def test_nul_characters_a_client_sent_are_dropped_not_refused(pg):
    store = pg.store()
    await store.open()
    nul = record(1, ts=time.time())
    nul.update(model_requested="gpt\x00-4o", content_input="a\x00b", metadata={"k": "v\x00w", "path": "c:\\u0000"})
    await store.write([nul])
    (back,) = await store.recent(limit=10)
    assert (back["model_requested"], back["content_input"]) == ("gpt-4o", "ab")
    assert back["metadata"] == {"k": "vw", "path": "c:\\u0000"}  # an escaped backslash before u0000 is text


async def test_a_record_the_server_refuses_is_set_aside_and_the_rest_of_its_batch_written(pg):
    store = pg.store()
    await store.open()
    now = time.time()
    batch = [record(i, ts=now) for i in range(5)]
    # Too big for the index on (project, ts): the server's "program limit exceeded", a row's fault, not an outage.
    batch[3]["project"] = os.urandom(8000).hex()
    with pytest.raises(RecordsRefused) as refused:
        await store.write(batch)
    ((index, why),) = refused.value.refused
    assert index == 3
    assert "ProgramLimitExceeded" in why
    assert sorted(r["id"] for r in await store.recent(limit=10)) == ["r0", "r1", "r2", "r4"]


async def test_the_next_write_works_after_the_server_closed_the_connections(pg):
    name = f"gw-test-{uuid.uuid4().hex[:8]}"
    store = pg.store(application_name=name)
    await store.open()
    # Several connections in the pool (saves hold theirs while they wait for the policy lock), all of them killed.
    await asyncio.gather(*(store.save_policy("p", "x", author="a") for _ in range(8)))
    kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
    assert len(await pg.fetch(kill, name)) > 1
    await store.write([record(1, ts=time.time())])  # straight after: each dead connection is dropped in turn
    await pg.fetch(kill, name)
    await asyncio.sleep(0.05)  # and once the client has seen the sockets close
    await store.write([record(2, ts=time.time())])
    await store.ping()
    assert [r["id"] for r in await store.recent()] == ["r2", "r1"]


async def test_migrations_go_down_and_up_again_and_never_twice(pg):
    schema = pg.new_schema()
    store = pg.store(schema)
    await store.open()
    assert {"model_cost_logs", "event_logs", "virtual_keys", "policy_versions"} <= await tables(pg, schema)
    await store.migrate_down(0)
    assert await tables(pg, schema) == {"schema_migrations"}
    await store.close()
    for _ in range(2):
        again = pg.store(schema)
        await again.open()
        await again.close()
    rows = await pg.fetch(f"SELECT version, name FROM {schema}.schema_migrations ORDER BY version")
    assert [(r[0], r[1]) for r in rows] == [(m[0], m[1]) for m in migrations("postgres")]
    assert [m[0] for m in migrations("postgres")] == [m[0] for m in migrations("sqlite")]
    store = pg.store(schema)
    await store.open()
    await store.write([record(1)])
    assert len(await store.recent()) == 1


async def test_stores_opening_together_on_a_fresh_schema_all_succeed(pg):
    schema = pg.new_schema()
    stores = [pg.store(schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    rows = await pg.fetch(f"SELECT version FROM {schema}.schema_migrations")
    assert sorted(r[0] for r in rows) == [m[0] for m in migrations("postgres")]
    # Saves through different pools still get distinct versions, in commit order.
    saved = await asyncio.gather(*(s.save_policy("p", "x", author="a") for s in stores for _ in range(3)))
    assert sorted(v.version for v in saved) == list(range(1, 13))
    assert await stores[0].policies_revision() == 12


async def test_days_ahead_have_partitions_and_retention_drops_old_days(pg):
    schema = pg.new_schema()
    store = pg.store(schema)
    await store.open()
    now = time.time()
    assert {day_name(now - DAY), day_name(now), day_name(now + 2 * DAY)} <= set(await partitions(pg, schema))
    assert await store.ensure_partitions() == []  # nothing new to make
    old = now - 5 * DAY
    created = await store.ensure_partitions(days_ahead=0, now=old)
    assert created == [day_name(old - DAY), day_name(old)]
    await store.write([record(1, ts=old), record(2, ts=now - 20 * DAY), record(3, ts=now - 60), record(4, ts=now)])
    assert await store.retention("model_cost_logs", 3600, now=now) == 2
    assert [r["id"] for r in await store.recent()] == ["r4", "r3"]
    names = await partitions(pg, schema)
    assert day_name(old) not in names
    assert day_name(old - DAY) not in names
    assert "model_cost_logs_default" in names


async def test_a_row_for_a_day_with_no_partition_waits_in_the_default_one_and_moves_in(pg):
    schema = pg.new_schema()
    store = pg.store(schema)
    await store.open()
    later = time.time() + 10 * DAY
    await store.write([record(1, ts=later), record(2, ts=later + 1)])
    rows = await pg.fetch(f"SELECT count(*) FROM {schema}.model_cost_logs_default")
    assert rows[0][0] == 2
    created = await store.ensure_partitions(days_ahead=12)
    assert day_name(later) in created
    moved = await pg.fetch(f"SELECT count(*) FROM {schema}.{day_name(later)}")
    left = await pg.fetch(f"SELECT count(*) FROM {schema}.model_cost_logs_default")
    assert (moved[0][0], left[0][0]) == (2, 0)
    assert [r["id"] for r in await store.recent()] == ["r2", "r1"]


async def test_a_server_that_does_not_answer_is_store_unavailable_without_the_password():
    store = PostgresStore(f"postgresql://gw:s3cret@127.0.0.1:{free_port()}/x", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable, match="cannot connect") as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.write([record(1)])
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.recent()


async def test_a_store_down_at_open_connects_on_a_later_call(pg):
    store = pg.store()
    real = store.dsn
    store.dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(StoreUnavailable):
        await store.open()
    store.dsn = real  # the server is back
    await store.write([record(1)])
    assert len(await store.recent()) == 1


def test_store_urls_and_schema_names():
    assert isinstance(open_store("postgresql://u@h/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db"), PostgresStore)
    with pytest.raises(ValueError, match="schema"):
        PostgresStore("postgresql://u@h/db", schema="Bad-Name; DROP")


def test_a_schema_can_be_named_in_the_url():
    store = PostgresStore("postgresql://u:pw@h:6543/db?schema=gw&sslmode=disable")
    assert (store.schema, store.dsn) == ("gw", "postgresql://u:pw@h:6543/db?sslmode=disable")
    assert store.where == "h:6543/db (gw)"


def test_the_gateway_writes_its_records_to_postgres(pg, make_config):
    schema = pg.new_schema()
    config = make_config(telemetry={"store": f"{pg.dsn}?schema={schema}"})
    with running(config) as (url, gateway):
        assert isinstance(gateway.store, PostgresStore)
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.status_code == 200
        deadline = time.monotonic() + 30
        while not (rows := asyncio.run(pg.fetch(f"SELECT * FROM {schema}.model_cost_logs"))):
            assert time.monotonic() < deadline, "the record never reached PostgreSQL"
            time.sleep(0.05)
    (row,) = rows
    assert (row["project"], row["model_requested"], row["status"], row["stream"]) == ("p1", "demo", 200, 0)
    assert [span["name"] for span in orjson.loads(row["spans"])][:1] == ["auth"]
