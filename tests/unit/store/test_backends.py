"""What every store does the same way, on SQLite and on PostgreSQL: records, events, virtual keys, retention."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from gateway.errors import InvalidRequest
from gateway.identity.keys import edited, issue
from gateway.store.base import KeyStore, PolicyStore, RecordsRefused, StoreUnavailable
from gateway.store.records import typed
from gateway.store.rows import VirtualKey
from tests.unit.store.conftest import record

pytestmark = pytest.mark.anyio
T = TypeVar("T")


async def test_a_batch_reads_back_newest_first_with_its_json_columns(store):
    await store.write([record(1), record(2, "p2"), record(3)])
    await store.write([])
    newest = await store.recent(limit=10, project="p1")
    assert [r["id"] for r in newest] == ["r3", "r1"]
    first = newest[0]
    assert list(first) == list(record(3))
    assert first["spans"] == [{"name": "auth", "ms": 0.01}]
    assert first["tags"] == {"k": "v"}
    assert (first["stream"], first["cost_usd"], first["ttfb_ms"], first["total_tokens"]) == (0, None, None, 15)
    assert first["route_reason"] == "weighted"
    assert [r["id"] for r in await store.recent(limit=2)] == ["r3", "r2"]
    await store.ping()


async def test_a_record_the_store_refuses_is_set_aside_and_the_rest_of_its_batch_written(store):
    bad = record(2)
    bad["model_requested"] = {"a": 1}  # untyped: no text column takes a dict, whatever the retries
    with pytest.raises(RecordsRefused) as refused:
        await store.write([record(1), bad, record(3)])
    assert [i for i, _ in refused.value.refused] == [1]
    assert sorted(r["id"] for r in await store.recent()) == ["r1", "r3"]
    await store.write([record(4)])  # and the next batch is written as usual
    assert sorted(r["id"] for r in await store.recent()) == ["r1", "r3", "r4"]


async def test_a_typed_record_is_written_whatever_values_it_was_built_with(store):
    odd = record(2)
    odd.update(status=None, model_requested={"a": 1}, prompt_tokens=2**70, latency_ms=float("nan"), stream="yes")
    await store.write([typed(odd)])
    (back,) = await store.recent()
    assert (back["status"], back["model_requested"], back["prompt_tokens"]) == (0, '{"a":1}', 2**63 - 1)
    assert (back["latency_ms"], back["stream"]) == (0.0, 0)


async def test_events_read_back_newest_first(store):
    events = [{"id": f"e{i}", "ts": 100.0 + i, "type": "breaker.open", "attrs": {"n": i, "d": "a/b"}} for i in range(3)]
    await store.write_events(events)
    await store.write_events([])
    back = await store.events(limit=2)
    assert back == [events[2], events[1]]


async def test_retention_removes_old_rows_only(store):
    now = time.time()
    await store.write([record(1, ts=now - 7200), record(2, ts=now - 10), record(3, ts=now)])
    await store.write_events([{"id": "old", "ts": now - 7200, "type": "t", "attrs": {}}])
    await store.write_events([{"id": "new", "ts": now, "type": "t", "attrs": {}}])
    assert await store.retention("model_cost_logs", 3600) == 1
    assert [r["id"] for r in await store.recent()] == ["r3", "r2"]
    assert await store.retention("event_logs", 3600) == 1
    assert [e["id"] for e in await store.events()] == ["new"]
    with pytest.raises(ValueError, match="virtual_keys"):
        await store.retention("virtual_keys", 1)


def key(key_id: str, project: str = "p1", created_at: float = 1.0, **fields) -> VirtualKey:
    fields.setdefault("key_hash", f"hash-{key_id}")
    return VirtualKey(id=key_id, key_prefix="sk-gw-abc", project=project, created_at=created_at, **fields)


async def test_keys_are_found_by_hash_and_id_and_listed_by_project(store):
    assert isinstance(store, KeyStore)
    assert isinstance(store, PolicyStore)
    full = key("k1", allowed_models=["gpt-4o", "demo"], metadata={"owner": "ann"}, rpm=60, budget_usd=2.5)
    await store.create_key(full)
    await store.create_key(key("k2", created_at=2.0))
    await store.create_key(key("k3", project="p2", created_at=3.0))
    assert await store.key_by_hash("hash-k1") == full
    assert await store.get_key("k1") == full
    assert await store.key_by_hash("nope") is None
    assert await store.get_key("nope") is None
    assert [k.id for k in await store.list_keys()] == ["k3", "k2", "k1"]
    assert [k.id for k in await store.list_keys(project="p1")] == ["k2", "k1"]
    with pytest.raises(StoreUnavailable):
        await store.create_key(key("k1"))  # the same id and digest


async def test_an_earlier_revocation_stands(store):
    await store.create_key(key("k1"))
    assert (await store.revoke_key("k1", at=100.0)).revoked_at == 100.0
    assert (await store.revoke_key("k1", at=200.0)).revoked_at == 100.0
    assert (await store.revoke_key("k1", at=50.0)).revoked_at == 50.0
    assert await store.revoke_key("nope", at=1.0) is None


async def test_rotation_adds_the_successor_and_schedules_the_old_keys_end(store):
    await store.create_key(key("k1"))
    new = key("k2", created_at=2.0, rotated_from="k1")
    assert await store.rotate_key("k1", new, revoke_at=500.0) == new
    assert (await store.get_key("k1")).revoked_at == 500.0
    assert await store.get_key("k2") == new
    assert await store.rotate_key("nope", key("k3"), revoke_at=1.0) is None
    assert await store.get_key("k3") is None
    with pytest.raises(StoreUnavailable):  # the successor's digest is taken: nothing changes
        await store.rotate_key("k1", key("k4", key_hash="hash-k2"), revoke_at=100.0)
    assert (await store.get_key("k1")).revoked_at == 500.0
    assert await store.get_key("k4") is None


async def test_an_edit_changes_the_editable_fields_only_and_never_a_revoked_key(store):
    await store.create_key(key("k1", rpm=5, allowed_models=["a"], metadata={"o": "1"}))
    forged = key("k1", project="p9", key_hash="hash-other", role="admin", rpm=60, tpm=1000, budget_usd=3.0,
                 budget_period="day", allowed_models=["a", "b"], metadata={"o": "2"}, name="renamed")  # fmt: skip
    updated = await store.update_key(forged, now=10.0)
    assert updated == await store.get_key("k1")
    assert (updated.rpm, updated.tpm, updated.budget_usd, updated.budget_period) == (60, 1000, 3.0, "day")
    assert (updated.allowed_models, updated.metadata, updated.name) == (["a", "b"], {"o": "2"}, "renamed")
    # Who the key is stays as it was made.
    assert (updated.project, updated.key_hash, updated.role) == ("p1", "hash-k1", "developer")
    await store.revoke_key("k1", at=20.0)
    assert await store.update_key(forged, now=15.0) is not None  # revoked later: still editable until then
    assert await store.update_key(forged, now=20.0) is None
    assert await store.update_key(key("nope"), now=1.0) is None


# Values an admin's JSON can carry for a key's numeric fields: each is refused by name, or stored as it reads.
HOSTILE_NUMBERS = (0, 1, -1, 0.5, 2**31, 2**53, 2**63, 2**64, 10**30, 1e300, 1.7e308, True, "5", [], {})


def refused_or(make: Callable[[], T]) -> T | str:
    """What make() returns, or the param its InvalidRequest names."""
    try:
        return make()
    except InvalidRequest as exc:
        return exc.param or "?"


@pytest.mark.parametrize("field", ["rpm", "tpm", "budget_usd", "expires_at", "expires_days"])
async def test_any_number_a_key_is_made_or_edited_with_is_refused_by_name_or_stored(store, field):
    """Not one value that passes the checks can fail the store's write (an integer past its column: a 500)."""
    for n, value in enumerate(HOSTILE_NUMBERS):
        made = refused_or(lambda: issue({"name": "h", "project": "p1", field: value}, now=1.0))  # noqa: B023
        if isinstance(made, str):
            assert made == field
        else:
            await store.create_key(dataclasses.replace(made[1], id=f"made{n}", key_hash=f"made{n}"))
            assert await store.get_key(f"made{n}") is not None
        if field in ("expires_at", "expires_days"):
            continue  # not editable: refused by name whatever the value
        await store.create_key(key(f"old{n}"))
        changed = refused_or(lambda: edited(key(f"old{n}"), {field: value}))  # noqa: B023
        if isinstance(changed, str):
            assert changed == field
        else:
            assert await store.update_key(changed, now=2.0) == await store.get_key(f"old{n}")


@pytest.mark.parametrize("field", ["rpm", "tpm"])
def test_a_limit_is_a_whole_number(field):
    assert refused_or(lambda: issue({"name": "h", field: 1.5})) == field
    assert refused_or(lambda: edited(key("k"), {field: 1.5})) == field
    assert edited(key("k"), {field: 60.0}).rpm == (60 if field == "rpm" else 0)
