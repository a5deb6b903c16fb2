"""ASGI type aliases shared across the package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# The time in seconds: time.monotonic for intervals, time.time for dates and what other processes share. Logic that
# depends on time takes one (a `clock` parameter with that default), so that its tests step it instead of sleeping.
Clock = Callable[[], float]
