"""spawn(): the one way to start background work, so that every task is tracked and ended at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

logger = logging.getLogger("gateway")

_tasks: set[asyncio.Task[Any]] = set()
R = TypeVar("R")
T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed: %r", task.get_name(), task.exception())


async def cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_for_wakeup(event: asyncio.Event, timeout_s: float) -> None:
    """A background writer's pause: until `event` is set (work arrived) or `timeout_s` passes; then clears it."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    event.clear()


async def map_in_slices(fn: Callable[[R], T], records: Sequence[R], size: int = 128) -> list[T]:
    """fn over a batch, a slice at a time with a pause between, so that a big batch never holds the event loop
    for more than a fraction of a millisecond."""
    out: list[T] = []
    for start in range(0, len(records), size):
        if start:
            await asyncio.sleep(0)
        out.extend(fn(r) for r in records[start : start + size])
    return out
