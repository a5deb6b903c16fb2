"""The stored responses of the Responses API, on SQLite and PostgreSQL: saved and read back as they were, of one
project only, chained by previous_response_id in one query, removed past their retention."""

from __future__ import annotations

import sqlite3
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.config.telemetry import TelemetryConfig
from gateway.ids import id_floor
from gateway.store import responses_sql
from gateway.store.base import StoredResponse, response_store
from gateway.store.maintenance import StoreMaintenance
from gateway.store.sqlite import SQLiteStore, migrations

pytestmark = pytest.mark.anyio

DAY = 86_400.0


def stored(n: int, *, project: str = "p1", previous: str | None = None, ts: float | None = None) -> StoredResponse:
    rid = f"resp_{n}"
    return StoredResponse.of(
        id=rid,
        project=project,
        created_at=1_700_000_000.0 + n if ts is None else ts,
        previous_response_id=previous,
        # Keys in an order no sorting gives: they come back as they went in.
        response={"id": rid, "object": "response", "status": "completed", "output": [{"type": "message"}],
                  "model": "demo", "created_at": 1_700_000_000 + n, "usage": None, "metadata": {"n": str(n)}},
        input_items=[{"id": f"in_{n}_0", "type": "message", "role": "user", "content": [
            {"type": "input_text", "text": f"turn {n} ✓ \u0000 nul"}]}],
    )  # fmt: skip


async def chain_of(store, n: int, *, project: str = "p1", start: int = 1) -> list[StoredResponse]:
    made, previous = [], None
    for i in range(start, start + n):
        r = stored(i, project=project, previous=previous)
        await store.save_responses([r])
        made.append(r)
        previous = r.id
    return made


async def test_a_response_is_read_back_as_it_was_saved(store) -> None:
    assert response_store(store) is store
    r = stored(1)
    await store.save_responses([r])
    back = await store.get_response("resp_1", project="p1")
    assert back == r
    assert list(back.response) == list(r.response)  # key order kept (PostgreSQL's json, not jsonb)
    assert await store.get_response("resp_2", project="p1") is None


async def test_saving_again_replaces_the_response(store) -> None:
    await store.save_responses([stored(1)])
    newer = StoredResponse.of("resp_1", "p1", 5.0, None, {"status": "incomplete"}, [])
    await store.save_responses([newer])
    assert await store.get_response("resp_1", project="p1") == newer


async def test_a_batch_of_first_and_later_turns_is_saved_in_its_order(store) -> None:
    # SQLite writes the first turns (no previous_response_id) by a statement of their own: one batch mixes both
    # shapes, and an id saved twice in it keeps its last version, whichever shape each has.
    first, later = stored(1), stored(2, previous="resp_1")
    again_later = stored(3, previous="resp_2")
    again_first = StoredResponse.of("resp_3", "p1", 7.0, None, {"status": "incomplete"}, [])
    await store.save_responses([first, later, again_later, again_first, stored(4, previous="resp_3")])
    assert await store.get_response("resp_1", project="p1") == first
    assert await store.get_response("resp_2", project="p1") == later
    assert await store.get_response("resp_3", project="p1") == again_first  # its previous_response_id NULL again
    assert [r.id for r in await store.response_chain("resp_4", project="p1")] == ["resp_3", "resp_4"]


async def test_a_batch_of_first_turns_alone_is_saved_as_one_run(store) -> None:
    # SQLite's common batch (first turns only) skips the runs' split: each row still as it was saved, the last
    # version of an id saved twice kept.
    again = StoredResponse.of("resp_2", "p1", 9.0, None, {"status": "incomplete"}, [{"type": "message"}])
    batch = [stored(1), stored(2), stored(3), again]
    await store.save_responses(batch)
    assert await store.get_response("resp_1", project="p1") == batch[0]
    assert await store.get_response("resp_2", project="p1") == again
    assert await store.get_response("resp_3", project="p1") == batch[2]
    assert [r.id for r in await store.response_chain("resp_3", project="p1")] == ["resp_3"]


async def test_a_batch_larger_than_a_statement_keeps_every_row_and_the_last_version(store) -> None:
    # SQLite writes a run in statements of many rows (64, then 32, 16...): 103 rows are four statements, the ids
    # saved twice across their bounds, the later shape between first turns.
    batch = [stored(i) for i in range(1, 101)]
    batch[70] = stored(71, previous="resp_70")
    again = [StoredResponse.of(f"resp_{i}", "p1", 9.0, None, {"v": 2}, []) for i in (3, 64, 65)]
    await store.save_responses(batch + again)
    expected = {r.id: r for r in batch + again}
    for rid, r in expected.items():
        assert await store.get_response(rid, project="p1") == r
    assert [r.id for r in await store.response_chain("resp_71", project="p1")] == ["resp_70", "resp_71"]


async def test_sqlite_writes_a_run_of_rows_in_few_statements(tmp_path) -> None:
    # sqlite3 lets the GIL go and takes it back at every statement it steps: executemany once per row, each time
    # a hand-off with the event loop when it holds the GIL. A run of 100 rows: 64 + 32 + 4, three INSERTs.
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    try:
        inserts: list[str] = []
        store._require().set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)
        await store.save_responses([stored(i) for i in range(1, 101)])
        assert len(inserts) == 3
    finally:
        await store.close()


async def test_another_project_neither_reads_nor_deletes_nor_replaces_a_response(store) -> None:
    r = stored(1, project="p1")
    await store.save_responses([r])
    assert await store.get_response("resp_1", project="p2") is None
    assert await store.delete_response("resp_1", project="p2") is False
    await store.save_responses([stored(1, project="p2")])  # the same id under another project: ignored
    assert await store.get_response("resp_1", project="p1") == r
    assert await store.get_response("resp_1", project="p2") is None
    assert await store.delete_response("resp_1", project="p1") is True
    assert await store.get_response("resp_1", project="p1") is None
    assert await store.delete_response("resp_1", project="p1") is False


async def test_the_chain_is_the_response_and_its_predecessors_oldest_first(store) -> None:
    made = await chain_of(store, 5)
    assert await store.response_chain("resp_5", project="p1") == made
    assert await store.response_chain("resp_3", project="p1") == made[:3]
    assert await store.response_chain("resp_1", project="p1") == made[:1]
    assert await store.response_chain("resp_5", project="p1", max_depth=2) == made[3:]  # the newest ones
    assert await store.response_chain("resp_9", project="p1") == []
    assert await store.response_chain("resp_5", project="p2") == []


async def test_a_chain_never_crosses_into_another_project_nor_past_a_missing_link(store) -> None:
    theirs = await chain_of(store, 2, project="p2")
    ours = stored(3, project="p1", previous=theirs[-1].id)  # a link to another project's response
    await store.save_responses([ours])
    assert await store.response_chain(ours.id, project="p1") == [ours]
    assert await store.response_chain(ours.id, project="p2") == []
    made = await chain_of(store, 4, start=10)
    await store.delete_response("resp_11", project="p1")
    assert await store.response_chain("resp_13", project="p1") == made[2:]


async def test_a_cycle_ends_at_max_depth(store) -> None:
    await store.save_responses([stored(1, previous="resp_2")])
    await store.save_responses([stored(2, previous="resp_1")])
    chain = await store.response_chain("resp_2", project="p1", max_depth=5)
    assert [r.id for r in chain] == ["resp_2", "resp_1", "resp_2", "resp_1", "resp_2"]


def made_at(ts: float, n: int) -> StoredResponse:
    """A response as the gateway stores it: its id is resp_ and a record id, whose first digits are its time."""
    r = stored(n, ts=ts)
    return r._replace(id=f"resp_{id_floor(ts)}{n:020x}")


async def test_retention_removes_the_responses_past_their_own_days(store) -> None:
    now = time.time()
    old, recent, young = made_at(now - 40 * DAY, 1), made_at(now - 10 * DAY, 2), made_at(now - 60, 3)
    await store.save_responses([old, recent, young])
    registry = CollectorRegistry()
    # telemetry.retention_days says nothing of responses; responses.retention_days is theirs.
    maintenance = StoreMaintenance(store, TelemetryConfig(), registry, responses_retention_days=30)
    assert await maintenance.run_once() == {"responses": 1}
    assert await store.get_response(old.id, project="p1") is None
    assert await store.get_response(recent.id, project="p1") is not None
    assert registry.get_sample_value("gateway_store_retention_removed_total", {"table": "responses"}) == 1
    shorter = StoreMaintenance(store, TelemetryConfig(), CollectorRegistry(), responses_retention_days=7)
    assert await shorter.run_once() == {"responses": 1}
    assert await store.get_response(young.id, project="p1") is not None


async def test_retention_goes_by_the_id_and_never_removes_a_row_early(store) -> None:
    now = time.time()
    # An id that is not the gateway's sorts after every one of its ids: left to a deletion by hand.
    foreign = stored(1, ts=now - 40 * DAY)
    # Its time in its id and its ts disagree (no response the gateway makes): the younger of the two wins.
    odd = made_at(now - 40 * DAY, 2)._replace(created_at=now - 60)
    await store.save_responses([foreign, odd, made_at(now - 40 * DAY, 3)])
    assert await store.retention("responses", 30 * DAY) == 1
    assert await store.get_response(foreign.id, project="p1") is not None
    assert await store.get_response(odd.id, project="p1") is not None


def test_sqlite_finds_the_responses_past_retention_by_the_primary_key(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "g.db")
    for _, _, up, _ in migrations():
        conn.executescript(up)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN " + responses_sql.retention("?"), (responses_sql.retention_bound(time.time()), 0.0)
    ).fetchall()
    assert "USING INDEX sqlite_autoindex_responses_1 (id<?)" in " ".join(row[-1] for row in plan), plan


async def test_an_id_the_store_cannot_hold_is_simply_not_there(store) -> None:
    await store.save_responses([stored(1)])
    assert await store.get_response("resp_1\x00", project="p1") is None
    assert await store.delete_response("resp_1\x00", project="p1") is False
    assert await store.response_chain("resp_1\x00", project="p1") == []
    odd = StoredResponse.of("resp_odd", "p\x00", 1.0, "resp_\x001", {"x": "\x00"}, [])
    await store.save_responses([odd])  # PostgreSQL keeps it without the NULs of its text columns; SQLite as it is
    back = await store.get_response("resp_odd", project="p" if store.dialect == "postgres" else "p\x00")
    assert back is not None
    assert back.response == {"x": "\x00"}  # JSON holds it escaped


async def test_the_migration_goes_down_and_up(tmp_path) -> None:
    path = str(tmp_path / "g.db")
    store = SQLiteStore(path)
    await store.open()
    await store.save_responses([stored(1)])
    await store.migrate_down(9)
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "responses" not in tables
    assert "model_cost_logs" in tables
    await store.close()
    store = SQLiteStore(path)
    await store.open()
    assert await store.get_response("resp_1", project="p1") is None
    await store.save_responses([stored(1)])
    assert await store.get_response("resp_1", project="p1") == stored(1)
    await store.close()
