"""Background work never holds the event loop for long (issue 15: no piece of it for more than 1 ms), checked by the
work's size, not its time: a coroutine over a batch is driven step by step, and what one step handles before it
gives the loop back must not pass its slice, whatever the machine's speed; work that touches the filesystem on a
timer runs in a thread."""

from __future__ import annotations

import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import PoliciesConfig
from gateway.policy.registry import PolicyRegistry
from gateway.store import rollups
from gateway.tasks import map_in_slices
from tests.unit.policy.test_registry import FlakyStore


def most_in_one_step(coro: Coroutine[Any, Any, Any], done: list[int]) -> int:
    """The most items (`done[0]` counts them) one step of the coroutine handled; asyncio.sleep(0) is its only yield."""
    most = 0
    while True:
        before = done[0]
        try:
            coro.send(None)
        except StopIteration:
            return max(most, done[0] - before)
        most = max(most, done[0] - before)


def test_a_batch_mapped_in_slices_gives_the_loop_back_every_slice() -> None:
    done = [0]

    def count(item: int) -> int:
        done[0] += 1
        return item

    assert most_in_one_step(map_in_slices(count, list(range(1000))), done) == 128
    done[0] = 0
    assert most_in_one_step(map_in_slices(count, list(range(1000)), 8), done) == 8


def test_the_rollups_of_a_batch_on_the_loop_are_summed_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    done = [0]
    count = rollups._count

    def counted(hours: dict[tuple[Any, ...], list[Any]], row: Any) -> None:
        done[0] += 1
        count(hours, row)

    monkeypatch.setattr(rollups, "_count", counted)
    at = {name: i for i, name in enumerate(rollups.RECORD_COLUMNS)}
    row: list[Any] = [None] * len(rollups.RECORD_COLUMNS)
    for name, value in {"ts": 1.7e9, "status": 200, "latency_ms": 20.0, "prompt_tokens": 1, "completion_tokens": 1,
                        "total_tokens": 2, "cost_usd": 0.0, "project": "p", "key_name": "k"}.items():  # fmt: skip
        row[at[name]] = value
    assert most_in_one_step(rollups.summed_async([tuple(row)] * 1000), done) == 256


@pytest.mark.anyio
async def test_the_policies_poll_reads_the_filesystem_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_text("policies: [{name: from-file, actions: {tag: {a: b}}}]\n")
    store = FlakyStore()
    store.down = False
    registry = PolicyRegistry(
        PoliciesConfig(paths=[str(tmp_path)]),
        resolve=Path,
        store=store,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
    )
    signature = registry._file_signature
    threads: list[threading.Thread] = []

    def noted() -> Any:
        threads.append(threading.current_thread())
        return signature()

    monkeypatch.setattr(registry, "_file_signature", noted)
    await registry.refresh()
    assert threads
    assert threading.main_thread() not in threads
    assert [p.name for p in registry.current.policies] == ["from-file"]
