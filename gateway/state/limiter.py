"""What one request asks of the limiters: a list of Checks, each one counter to check and reserve against.

Both backends (memory.py in-process, redis.py with reserve.lua) implement the same four kinds with the same
arithmetic, so that a gateway that falls back from Redis to memory keeps the same semantics:

    BUCKET       token bucket: `capacity` (the burst) refills at `limit` per minute; a request takes `cost`
    WINDOW       sliding window (two fixed windows of `window_ms`, the older weighted by its remaining overlap)
    CONCURRENCY  requests in flight, released when the request ends; `window_ms` is a lease: slots are counted
                 by generation of one lease each, and a generation is dropped a lease after it ended, so that
                 slots a killed process held (or whose settlement was lost) come back within two leases, however
                 busy the subject (the counter's expiry, renewed by every request, would not bring them back)
    BUDGET       US dollars spent in a period (day or month, in the key's name); `window_ms` is the time to the
                 period's end, `soft` the spend at which the soft threshold fires (once per period)

Reserving is all or nothing: if any check fails, nothing is taken. Settling applies a signed `delta` to each
counter afterwards (a token overshoot, the unused part of a reservation, a released slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

BUCKET, WINDOW, CONCURRENCY, BUDGET = 1, 2, 3, 4
# Which x-ratelimit-* triple a check feeds.
NO_HEADER, REQUESTS, TOKENS = 0, 1, 2


@dataclass(slots=True)
class Check:
    key: str
    kind: int
    limit: float  # per minute (BUCKET, WINDOW), slots (CONCURRENCY) or US dollars (BUDGET)
    capacity: float  # BUCKET: the burst; others: equal to limit
    window_ms: int  # WINDOW: window; CONCURRENCY: lease; BUDGET: time to the period's end
    cost: float  # what this request takes
    header: int = NO_HEADER
    label: str = ""  # names the limit in a 429's message: "tpm of team t1"
    # BUDGET: spend that fires the soft threshold, 0: none. CONCURRENCY: when this request's slot was taken, by the
    # clock of the backend that took it, 0: not taken (Limiter.reserve sets it: held_since), so that its release
    # leaves the generation it was counted in.
    soft: float = 0.0
    # The shared check this one was taken from (taking): what a backend caches about the fields that do not change
    # with the request (key, kind, limit, capacity, window, soft) is kept there, made once for every request.
    origin: Check | None = field(default=None, compare=False, repr=False)
    encoded: tuple[bytes, bytes, bytes] | None = field(default=None, compare=False, repr=False)  # limiter_redis.py

    def taking(self, cost: float) -> Check:
        """This check with this request's cost: checks are shared by the requests of one caller."""
        return Check(self.key, self.kind, self.limit, self.capacity, self.window_ms, cost, self.header, self.label,
                     self.soft, self.origin or self)  # fmt: skip

    def held_since(self, at_ms: float) -> Check:
        """This (CONCURRENCY) check, its slot taken at `at_ms`: a check of its own (no origin), as its encoding
        differs from the shared one's."""
        return Check(self.key, self.kind, self.limit, self.capacity, self.window_ms, self.cost, self.header,
                     self.label, at_ms)  # fmt: skip

    def args(self, amount: float) -> list[float | int]:
        """The six script arguments of this check, with `amount` as the cost (reserve) or delta (settle)."""
        return [self.kind, self.limit, self.capacity, self.window_ms, amount, self.soft]


@dataclass(slots=True)
class Outcome:
    ok: bool
    failed: int = -1  # index of the check that failed
    retry_ms: float = 0.0  # when the failed check could admit this request
    remaining: list[float] = field(default_factory=list)  # per check, after the reservation
    reset_ms: list[float] = field(default_factory=list)  # per check: until the counter is back to empty
    soft_crossed: list[int] = field(default_factory=list)  # indexes of budgets that crossed `soft` just now
    # When it was admitted, by the clock of the backend that admitted it (Redis's TIME, ms): what a concurrency
    # slot's release says (Check.held_since), so that it leaves the generation it was counted in.
    at_ms: float = 0.0


@dataclass(slots=True)
class Reservation:
    """What a request reserved, to settle once it has ended: on this limiter (the one that answered), these checks,
    at this time (Outcome.at_ms)."""

    limiter: Limiter
    checks: list[Check]
    at_ms: float = 0.0

    def release(self, check: Check) -> Check:
        """A concurrency check of this reservation, as its release gives it: saying when its slot was taken (unless
        the limiter said so already: on a cluster, each master by its own clock)."""
        return check if check.soft else check.held_since(self.at_ms)


class LimiterUnavailable(Exception):
    """The backend cannot be reached; the failover decides between per-process limits and a 503."""


class Limiter(Protocol):
    name: str

    async def reserve(self, checks: list[Check]) -> Outcome:
        """All the checks or none; admitted, when (Outcome.at_ms). A limiter may replace a CONCURRENCY check in
        `checks` by its copy that says when its slot was taken (Check.held_since), what the request settles with."""
        ...

    async def peek(self, checks: list[Check]) -> list[float]:
        """How much of each counter is taken now, without taking anything (GET /admin/usage): the spend
        (BUDGET), the requests or tokens used (BUCKET: capacity minus what is left; WINDOW: the weighted count)
        or the requests in flight (CONCURRENCY). One round trip on a networked backend."""
        ...

    def settle(self, items: list[tuple[Check, float]]) -> None:
        """Apply deltas. Never awaits: a backend that needs the network sends them in the background."""

    async def close(self) -> None: ...
