"""The Responses API's part of the typed config: how the gateway keeps the responses that later turns name by
previous_response_id (gateway/conversations.py). gateway/config/__init__.py loads it as part of GatewayConfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class ResponsesConfig:
    # Keep the responses of requests that ask for it (`store`, true unless the request says false). false: none is
    # kept, whatever the request says, and previous_response_id finds nothing.
    store: bool = True
    # Days a stored response is kept in telemetry.store (removed by the store's maintenance, whatever
    # telemetry.retention_days says of other tables).
    retention_days: float = 30.0
    # Responses each worker keeps in memory (the least recently used leave first): the next turn finds the last
    # one at once, even before the store has it, and while the store is down.
    memory_max: int = 10_000
    # ...and at most this much of their JSON (as many again may wait for a store that is down): a response whose
    # input carries images weighs megabytes.
    memory_max_mb: float = 64.0
    # The longest chain of turns previous_response_id may bring back; a longer one is refused (400).
    max_chain: int = 1000


def check_responses(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    responses = config.responses
    for key in ("retention_days", "memory_max", "memory_max_mb", "max_chain"):
        if not getattr(responses, key) > 0:
            problems.append((f"responses.{key}", "must be positive"))
    if "responses" in config.telemetry.retention_days:
        problems.append(("telemetry.retention_days.responses", "set by responses.retention_days"))
