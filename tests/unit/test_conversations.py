"""Conversations: a saved response is found at once (memory), reaches the store in the background, and is found from
there by another worker; a store that is down or hangs holds back neither save() nor what memory answers, fails
other reads within their bound, and gets every response once it is back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from gateway.conversations import FRESH_S, Conversations
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.ids import new_id
from gateway.store.base import StoredResponse
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.faults import FaultyProxy
from tests.services import require_postgres
from tests.unit.sinks.test_outbox import until

pytestmark = pytest.mark.anyio

# Far above the bounds set below (0.3 s writes, 0.5 s reads), far below a hold (5 s of busy_timeout, asyncpg's 60 s).
BOUND_S = 3.0


def turn(n: int, *, project: str = "p1", previous: str | None = None) -> StoredResponse:
    rid = f"resp_{n}"
    return StoredResponse.of(
        rid, project, 1_700_000_000.0 + n, previous, {"id": rid, "object": "response", "n": n}, [{"id": f"in_{n}"}]
    )


def turns(n: int, *, project: str = "p1", start: int = 1) -> list[StoredResponse]:
    out: list[StoredResponse] = []
    for i in range(start, start + n):
        out.append(turn(i, project=project, previous=out[-1].id if out else None))
    return out


def conversations(store, registry: CollectorRegistry | None = None, **options) -> Conversations:
    settings = {"memory_max": 100, "write_timeout_s": 0.3, "read_timeout_s": 0.5, "max_backoff_s": 0.1, **options}
    return Conversations(store, registry=registry or CollectorRegistry(), **settings)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Counting:
    """A store that counts the calls made to it."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.store, name)


# -- memory alone -------------------------------------------------------------------------------------------------


async def test_without_a_store_everything_works_from_memory() -> None:
    conv = conversations(None)
    made = turns(3)
    for r in made:
        conv.save(r)
    assert await conv.get("resp_2", project="p1") == made[1]
    assert await conv.history("resp_3", project="p1") == made
    assert await conv.history("resp_1", project="p1") == made[:1]
    assert await conv.history("resp_9", project="p1") is None
    assert await conv.delete("resp_3", project="p1") is True
    assert await conv.get("resp_3", project="p1") is None
    assert await conv.delete("resp_3", project="p1") is False
    await conv.close()


async def test_another_project_sees_nothing_and_deletes_nothing() -> None:
    conv = conversations(None)
    ours = turns(2)
    for r in ours:
        conv.save(r)
    theirs = turn(3, project="p2", previous="resp_2")  # a chain that would cross projects
    conv.save(theirs)
    assert await conv.get("resp_1", project="p2") is None
    assert await conv.history("resp_2", project="p2") is None
    assert await conv.history("resp_3", project="p2") == [theirs]  # it ends where the project does
    assert await conv.delete("resp_1", project="p2") is False
    assert await conv.get("resp_1", project="p1") == ours[0]


async def test_memory_keeps_the_most_recently_used_responses() -> None:
    conv = conversations(None, memory_max=3)
    for r in turns(3):
        conv.save(r)
    assert await conv.get("resp_1", project="p1") is not None  # used: now the newest
    conv.save(turn(4))
    assert await conv.get("resp_2", project="p1") is None
    assert [r.id for r in await conv.history("resp_4", project="p1") or []] == ["resp_4"]  # resp_3 starts nothing
    assert await conv.get("resp_1", project="p1") is not None


async def test_a_conversation_longer_than_max_chain_is_refused() -> None:
    conv = conversations(None, max_chain=3)
    for r in turns(4):
        conv.save(r)
    assert len(await conv.history("resp_3", project="p1") or []) == 3
    with pytest.raises(InvalidRequest) as refused:
        await conv.history("resp_4", project="p1")
    assert refused.value.param == "previous_response_id"


# -- with a store -------------------------------------------------------------------------------------------------


async def test_a_saved_response_is_found_at_once_then_reaches_the_store_for_other_workers(sqlite_store) -> None:
    conv = conversations(sqlite_store)
    made = turns(3)
    for r in made:
        conv.save(r)
    assert await conv.get("resp_3", project="p1") == made[2]  # before the store has it, maybe
    await until(lambda: not conv._unsaved, 10)
    assert await sqlite_store.get_response("resp_3", project="p1") == made[2]
    other = conversations(Counting(sqlite_store))  # another worker or replica, or after a restart
    assert await other.get("resp_2", project="p1") == made[1]
    assert await other.get("resp_2", project="p2") is None
    assert await other.history("resp_3", project="p1") == made
    await conv.close()
    await other.close()


class LateWrites:
    """A store whose writes take `delay_s` (a loaded PostgreSQL): what one worker saved reaches it late."""

    def __init__(self, store, delay_s: float) -> None:
        self.store = store
        self.delay_s = delay_s

    async def save_response(self, r: StoredResponse) -> None:
        await asyncio.sleep(self.delay_s)
        await self.store.save_response(r)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def fresh_turns(n: int) -> list[StoredResponse]:
    """Turns whose ids are the gateway's, made now."""
    out: list[StoredResponse] = []
    for _ in range(n):
        rid = f"resp_{new_id()}"
        previous = out[-1].id if out else None
        out.append(StoredResponse.of(rid, "p1", time.time(), previous, {"id": rid}, [{"id": f"in_{rid}"}]))
    return out


@pytest.mark.parametrize("read", ["history", "get"])
async def test_a_response_another_worker_just_made_is_found_while_its_write_is_on_the_way(sqlite_store, read) -> None:
    """The next turn sent at once to another worker or replica: the first one's writer is behind its answer."""
    maker = conversations(LateWrites(sqlite_store, 0.2))
    made = fresh_turns(3)
    for r in made:
        maker.save(r)
    other = conversations(sqlite_store)
    started = time.monotonic()
    if read == "history":
        assert await other.history(made[-1].id, project="p1") == made
    else:
        assert await other.get(made[-1].id, project="p1") == made[-1]
    assert time.monotonic() - started < FRESH_S
    assert await other.get(made[-1].id, project="p2") is None  # and never another project's
    await maker.close()
    await other.close()


async def test_a_miss_waits_only_for_a_young_id_of_the_gateway_and_never_past_fresh_s(sqlite_store) -> None:
    conv = conversations(sqlite_store)
    young = f"resp_{new_id()}"
    old = "resp_" + f"{int((time.time() - 10) * 1000):012x}" + new_id()[12:]
    future = "resp_" + f"{int((time.time() + 3600) * 1000):012x}" + new_id()[12:]
    for quick in ("resp_nothing", old, future, "resp_" + "f" * 32):
        started = time.monotonic()
        assert await conv.history(quick, project="p1") is None
        assert await conv.get(quick, project="p1") is None
        assert time.monotonic() - started < FRESH_S / 2, quick  # no re-reads: they last FRESH_S
    started = time.monotonic()
    assert await conv.history(young, project="p1") is None
    assert FRESH_S - 0.5 < time.monotonic() - started < FRESH_S + 2
    await conv.close()


async def test_history_takes_memory_s_newest_links_and_the_rest_in_one_store_query(sqlite_store) -> None:
    first = conversations(sqlite_store)
    made = turns(4)
    for r in made:
        first.save(r)
    await first.close()  # written
    store = Counting(sqlite_store)
    other = conversations(store)
    fifth = turn(5, previous="resp_4")
    other.save(fifth)
    store.calls.clear()
    assert await other.history("resp_5", project="p1") == [*made, fifth]
    assert store.calls.count("response_chain") == 1
    store.calls.clear()
    assert await other.history("resp_5", project="p1") == [*made, fifth]  # now all in memory
    assert "response_chain" not in store.calls
    assert await other.history("resp_5", project="p2") is None
    await other.close()


async def test_a_chain_too_long_in_the_store_is_refused(sqlite_store) -> None:
    for r in turns(5):
        await sqlite_store.save_responses([r])
    conv = conversations(sqlite_store, max_chain=4)
    conv.save(turn(6, previous="resp_5"))
    assert len(await conv.history("resp_4", project="p1") or []) == 4
    with pytest.raises(InvalidRequest):
        await conv.history("resp_6", project="p1")
    await conv.close()


async def test_a_deletion_removes_the_response_from_memory_and_store(sqlite_store) -> None:
    conv = conversations(sqlite_store)
    conv.save(turn(1))
    await until(lambda: not conv._unsaved, 10)
    other = conversations(sqlite_store)
    assert await other.delete("resp_1", project="p2") is False
    assert await other.delete("resp_1", project="p1") is True  # only in the store, for this one
    assert await sqlite_store.get_response("resp_1", project="p1") is None
    conv.save(turn(2))
    assert await conv.delete("resp_2", project="p1") is True  # maybe only in memory yet
    await conv.close()
    assert await sqlite_store.get_response("resp_2", project="p1") is None


class SlowWrites:
    """A store whose writes wait until `release` is set."""

    def __init__(self, store) -> None:
        self.store = store
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def save_responses(self, responses: list[StoredResponse]) -> None:
        self.started.set()
        await self.release.wait()
        await self.store.save_responses(responses)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


async def test_a_deletion_during_the_write_does_not_bring_the_response_back(sqlite_store) -> None:
    slow = SlowWrites(sqlite_store)
    conv = conversations(slow, write_timeout_s=5.0)
    conv.save(turn(1))
    await slow.started.wait()
    asyncio.get_running_loop().call_later(0.05, slow.release.set)  # the write commits while the deletion waits
    assert await conv.delete("resp_1", project="p1") is True
    assert await sqlite_store.get_response("resp_1", project="p1") is None
    await conv.close()


class Refusing:
    """Refuses the responses of even numbers (a value the store cannot take), in whatever batch they come."""

    def __init__(self) -> None:
        self.saved: list[str] = []

    async def save_responses(self, responses: list[StoredResponse]) -> None:
        if any(int(r.id.removeprefix("resp_")) % 2 == 0 for r in responses):
            raise ValueError("a value the store cannot take")
        self.saved += [r.id for r in responses]


async def test_a_response_the_store_refuses_is_counted_and_not_retried() -> None:
    registry = CollectorRegistry()
    store = Refusing()
    conv = conversations(store, registry)
    for n in range(1, 8):  # saved before the writer runs: one batch, split until the refused ones are alone
        conv.save(turn(n))
    await until(lambda: not conv._unsaved, 10)
    assert registry.get_sample_value("gateway_responses_not_stored_total") == 3
    assert registry.get_sample_value("gateway_responses_persist_failures_total") == 0
    assert sorted(store.saved) == ["resp_1", "resp_3", "resp_5", "resp_7"]
    assert await conv.get("resp_2", project="p1") is not None  # memory still has it
    await conv.close()


# -- a store that hangs or is down --------------------------------------------------------------------------------


async def check_a_hung_store(store, hang, recover, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    conv = conversations(store, registry)
    made = turns(3)
    conv.save(made[0])
    await until(lambda: not conv._unsaved, 10)
    hang()
    caplog.set_level(logging.INFO, logger="gateway.responses")
    started = time.monotonic()
    conv.save(made[1])
    conv.save(made[2])
    # save() never waits for the store: one that did would be held by the hang (SQLite's 5 s busy_timeout, the
    # frozen proxy), far past BOUND_S, which leaves room for a busy machine.
    assert time.monotonic() - started < BOUND_S
    # Memory answers for what it holds, at once.
    # Not reads of the store: the hung store cannot answer them (a read fails as unavailable once its 0.5 s bound
    # passes), so what memory holds is what comes back.
    assert await conv.get("resp_3", project="p1") == made[2]
    assert await conv.history("resp_3", project="p1") == made
    # What only the store could say fails within the read bound, as the store's being unavailable.
    await until(lambda: (registry.get_sample_value("gateway_responses_persist_failures_total") or 0) >= 1, 20)
    other = conversations(store)
    for read in (conv.get("resp_9", project="p1"), other.history("resp_3", project="p1")):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await read
        assert time.monotonic() - started < BOUND_S
    await until(lambda: (registry.get_sample_value("gateway_responses_persist_failures_total") or 0) >= 4, 20)
    failing = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(failing) == 1  # once per outage
    assert registry.get_sample_value("gateway_responses_unsaved") == 2
    recover()
    await until(lambda: not conv._unsaved, 30)
    assert any("written again" in r.getMessage() for r in caplog.records)
    await other.close()
    assert await other.history("resp_3", project="p1") == made  # from the store, now that it answers
    await conv.close()
    assert registry.get_sample_value("gateway_responses_not_stored_total") == 0


async def test_a_frozen_postgresql_holds_back_nothing_and_gets_every_response_back(caplog) -> None:
    dsn = require_postgres()
    schema = f"gw_conv_{uuid.uuid4().hex[:10]}"
    with FaultyProxy.before(dsn) as proxy:
        store = PostgresStore(proxy.url(dsn), schema=schema, connect_timeout_s=2, query_timeout_s=0.5)
        await store.open()
        try:
            await check_a_hung_store(store, proxy.freeze, proxy.thaw, caplog)
        finally:
            await store.close()
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


async def test_a_locked_sqlite_database_holds_back_nothing_and_gets_every_response_back(sqlite_store, caplog) -> None:
    other = sqlite3.connect(sqlite_store.path, isolation_level=None, check_same_thread=False)
    try:
        await check_a_hung_store(
            sqlite_store, lambda: other.execute("BEGIN EXCLUSIVE"), lambda: other.execute("COMMIT"), caplog
        )
    finally:
        other.close()


async def test_close_writes_what_waits_and_counts_what_it_cannot(sqlite_store) -> None:
    conv = conversations(sqlite_store)
    for r in turns(20):
        conv.save(r)
    await conv.close()
    assert len(await sqlite_store.response_chain("resp_20", project="p1")) == 20
    conv.save(turn(21))  # after close: memory only
    assert await conv.get("resp_21", project="p1") is not None
    assert await sqlite_store.get_response("resp_21", project="p1") is None

    registry = CollectorRegistry()
    locked = sqlite3.connect(sqlite_store.path, isolation_level=None, check_same_thread=False)
    try:
        locked.execute("BEGIN EXCLUSIVE")
        stuck = conversations(sqlite_store, registry)
        for r in turns(3, start=30):
            stuck.save(r)
        started = time.monotonic()
        await stuck.close(timeout_s=1.0)
        assert time.monotonic() - started < BOUND_S
        assert registry.get_sample_value("gateway_responses_not_stored_total") == 3
    finally:
        locked.execute("COMMIT")
        locked.close()


async def test_responses_waiting_for_a_store_that_is_down_are_bounded(sqlite_store) -> None:
    registry = CollectorRegistry()
    locked = sqlite3.connect(sqlite_store.path, isolation_level=None, check_same_thread=False)
    try:
        locked.execute("BEGIN EXCLUSIVE")
        conv = conversations(sqlite_store, registry, memory_max=2)
        for r in turns(3):
            conv.save(r)
        assert registry.get_sample_value("gateway_responses_not_stored_total") == 1
        assert list(conv._unsaved) == ["resp_2", "resp_3"]
    finally:
        locked.execute("COMMIT")
        locked.close()
    await until(lambda: not conv._unsaved, 30)
    await conv.close()
    assert await sqlite_store.get_response("resp_1", project="p1") is None
    assert await sqlite_store.get_response("resp_3", project="p1") is not None


class Batches:
    def __init__(self) -> None:
        self.batches: list[int] = []

    async def save_responses(self, responses: list[StoredResponse]) -> None:
        self.batches.append(len(responses))

    async def get_response(self, response_id: str, *, project: str) -> StoredResponse | None:
        return None


async def test_responses_saved_together_are_written_in_batches() -> None:
    """One transaction per batch, not per response: a commit each cost the store's thread +30 % CPU a request."""
    store = Batches()
    conv = conversations(store, memory_max=1000)
    for n in range(1, 301):
        conv.save(turn(n))
    await until(lambda: not conv._unsaved, 10)
    assert store.batches == [256, 44]
    await conv.close()


async def test_responses_saved_during_a_write_wait_linger_s_for_others_after_it() -> None:
    """A batch that is not full waits linger_s, also right after a write: before, what came during a write was
    written as soon as it ended, so that under load each write's duration set the pace (a commit per few)."""
    store = SlowWrites(Batches())
    conv = conversations(store, memory_max=1000, linger_s=60.0)
    for n in range(1, 257):  # a full batch: written at once
        conv.save(turn(n))
    await store.started.wait()
    conv.save(turn(257))  # during the write
    store.release.set()
    await until(lambda: store.store.batches == [256], 10)
    for _ in range(20):
        await asyncio.sleep(0.01)  # the writer's turns: the one left is not written alone
    assert store.store.batches == [256]
    conv.save(turn(258))
    await conv.close()  # closing: what waits is written at once, one batch
    assert store.store.batches == [256, 2]


async def test_memory_is_bounded_by_the_responses_size_too() -> None:
    """A response whose input carries an image weighs megabytes: memory_max_mb bounds memory and the unsaved."""
    store = SlowWrites(Batches())  # the writer never finishes: everything stays unsaved
    conv = conversations(store, memory_max=1000, memory_max_mb=1.0)
    image = "x" * 300_000
    for n in range(1, 11):
        conv.save(
            StoredResponse.of(f"resp_{n}", "p1", 0.0, None, {"output": []}, [{"type": "message", "content": image}])
        )
    assert 3 * 300_000 <= conv._memory_bytes <= 1_048_576
    assert conv._unsaved_bytes <= 1_048_576
    assert await conv.get("resp_10", project="p1") is not None  # the newest stay
    assert await conv.get("resp_1", project="p1") is None  # the oldest were given up
    store.release.set()
    await conv.close()


async def test_a_response_saved_again_replaces_the_first_and_the_sizes_add_up(sqlite_store) -> None:
    """save() replaces an unsaved or remembered response of the same id (its size taken back), and the writer's
    batch gives back exactly what it wrote: the bounds' sums end at nothing once the store has everything."""
    conv = conversations(sqlite_store, memory_max=1000)
    first = StoredResponse.of("resp_1", "p1", 0.0, None, {"output": ["a"]}, [])
    again = StoredResponse.of("resp_1", "p1", 0.0, None, {"output": ["a much longer answer"]}, [{"type": "x"}])
    conv.save(first)
    conv.save(turn(2))
    conv.save(again)
    assert list(conv._unsaved) == ["resp_2", "resp_1"]  # the new version waits behind the others
    assert conv._unsaved_bytes == conv._memory_bytes == again.size + turn(2).size
    await until(lambda: not conv._unsaved, 10)
    assert conv._unsaved_bytes == 0
    assert conv._writing == {}
    found = await sqlite_store.get_response("resp_1", project="p1")
    assert found is not None
    assert found.response_json == again.response_json
    await conv.close()
