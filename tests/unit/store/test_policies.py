"""Versioned policies, the same on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.base import PolicyConflict

pytestmark = pytest.mark.anyio

SOURCE = "name: no-gpt4\nmatch: {model: gpt-4o}\naction: deny\n"


async def test_create_then_update_gives_versions_one_and_two(store):
    assert await store.policies_revision() == 0
    assert await store.policy_history("p") == []
    first = await store.save_policy("p", SOURCE, author="ann", expected_version=0)
    assert (first.name, first.version, first.source, first.author, first.deleted) == ("p", 1, SOURCE, "ann", False)
    assert first.created_at > 0
    second = await store.save_policy("p", SOURCE + "# v2\n", author="bob", expected_version=1)
    assert second.version == 2
    assert await store.policy_history("p") == [second, first]
    assert await store.live_policies() == [second]


async def test_a_stale_or_wrong_expected_version_is_a_conflict_and_saves_nothing(store):
    await store.save_policy("p", SOURCE, author="ann")
    await store.save_policy("p", SOURCE, author="ann")
    revision = await store.policies_revision()
    with pytest.raises(PolicyConflict, match="version 2, not 1"):
        await store.save_policy("p", "stale", author="bob", expected_version=1)
    with pytest.raises(PolicyConflict, match="exists"):
        await store.save_policy("p", "new", author="bob", expected_version=0)
    with pytest.raises(PolicyConflict, match="no policy 'q'"):
        await store.save_policy("q", "new", author="bob", expected_version=3)
    assert await store.policies_revision() == revision
    assert [v.version for v in await store.policy_history("p")] == [2, 1]
    assert await store.policy_history("q") == []


async def test_a_deletion_is_a_version_and_a_new_save_continues_the_numbering(store):
    await store.save_policy("p", SOURCE, author="ann")
    await store.save_policy("keep", SOURCE, author="ann")
    deletion = await store.delete_policy("p", author="bob")
    assert deletion is not None
    assert (deletion.version, deletion.deleted, deletion.author) == (2, True, "bob")
    assert await store.delete_policy("p", author="bob") is None  # no live policy left to delete
    assert await store.delete_policy("never", author="bob") is None
    assert [(v.version, v.deleted) for v in await store.policy_history("p")] == [(2, True), (1, False)]
    assert [v.name for v in await store.live_policies()] == ["keep"]
    # Re-created: expected_version 0 (it does not exist now) or the deletion's version both hold.
    again = await store.save_policy("p", SOURCE, author="cy", expected_version=0)
    assert (again.version, again.deleted) == (3, False)
    await store.delete_policy("p", author="cy")
    assert (await store.save_policy("p", SOURCE, author="cy", expected_version=4)).version == 5
    assert [v.name for v in await store.live_policies()] == ["keep", "p"]


async def test_the_revision_grows_on_every_change(store):
    seen = [await store.policies_revision()]
    await store.save_policy("a", SOURCE, author="ann")
    seen.append(await store.policies_revision())
    await store.save_policy("b", SOURCE, author="ann")
    seen.append(await store.policies_revision())
    await store.save_policy("a", SOURCE, author="ann")
    seen.append(await store.policies_revision())
    await store.delete_policy("b", author="ann")
    seen.append(await store.policies_revision())
    assert seen == sorted(set(seen))
    await store.live_policies()  # reads change nothing
    assert await store.policies_revision() == seen[-1]


async def test_concurrent_saves_of_one_name_never_share_a_version(store):
    saved = await asyncio.gather(*(store.save_policy("p", f"v{i}", author="ann") for i in range(10)))
    assert sorted(v.version for v in saved) == list(range(1, 11))
    history = await store.policy_history("p")
    assert [v.version for v in history] == list(range(10, 0, -1))


async def test_concurrent_guarded_saves_let_exactly_one_win(store):
    await store.save_policy("p", SOURCE, author="ann")
    results = await asyncio.gather(
        *(store.save_policy("p", f"v{i}", author="ann", expected_version=1) for i in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, PolicyConflict) for r in results if isinstance(r, BaseException))
    assert [v.version for v in await store.policy_history("p")] == [2, 1]
