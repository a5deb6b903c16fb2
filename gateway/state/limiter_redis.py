"""Limits in Redis, shared by every worker and replica: limits.lua checks and reserves every limit of a request
in one round trip. Settlements (the other half of each request) never hold a request up: they are queued and
sent in batches, one script call per batch, by a background task.

On a Redis Cluster one script call may only touch keys of one hash slot, and a request's counters (its key's,
its team's, a global one) have a slot each (ratelimits.py tags them by subject). The checks are then grouped by
slot and the groups reserved at once, one call each, in parallel: still one round trip. If a group is refused
(or fails), what the others reserved is given back by a settlement, so nothing is ever admitted over a limit;
in the moment between, a concurrent request may see those counters higher than they end up (a refusal where a
single call would have admitted, only when two limits of one request are both at their edge).

A reservation its caller gave up on (no answer within the timeout) takes nothing when Redis runs it later
(RedisClock): on one server by that server's clock; on a cluster by a clock kept for each master, since each call
runs on the master of its slot and the masters' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from redis.crc import key_slot

from gateway import tasks
from gateway.state.limiter import CONCURRENCY, Check, LimiterUnavailable, Outcome
from gateway.state.redis_client import RedisUnavailable, RespClient, Script, bulk, connect

if TYPE_CHECKING:
    from gateway.state.redis_cluster import ClusterClient

logger = logging.getLogger("gateway.limits")

_SCRIPT = resources.files("gateway.state").joinpath("limits.lua").read_text(encoding="utf-8")


class RedisLimiter:
    name = "redis"

    def __init__(self, url: str, *, timeout_s: float = 0.25, on_error: Callable[[], None] | None = None) -> None:
        self._client = connect(url, timeout_s=timeout_s)
        self._script = Script(self._client, _SCRIPT)
        self._cluster = self._client.cluster
        # One server: the script's command is written from each check's encoding, made once (_fixed), not packed
        # from Python values by hiredis on every call (~100,000 instructions a request for three checks).
        self._one = self._client if isinstance(self._client, RespClient) else None
        self._clock = RedisClock(timeout_s)
        self._timeout_s = timeout_s
        self._clocks: dict[str, RedisClock] = {}  # on a cluster: one a master (host:port), as its clock is its own
        self._on_error = on_error
        self._pending: list[tuple[Check, float]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def reserve(self, checks: list[Check]) -> Outcome:
        one = self._one
        if one is not None:
            clock = self._clock
            amounts = [c.cost for c in checks]
            try:
                if not clock.base:  # no reply yet: Redis's clock first, so that no reservation goes without a bound
                    await clock.learn(one)
                sent = time.monotonic()
                reply = await self._script.call_packed(one, *_command(b"r", checks, amounts, clock.stale_after(sent)))
                if reply[0] == 2:  # stale by the bound of Redis's clock: that clock stepped forward; once without
                    clock.saw(reply[1], sent)
                    reply = await self._script.call_packed(one, *_command(b"r", checks, amounts, NEVER_STALE))
            except RedisUnavailable as exc:
                raise LimiterUnavailable(f"redis: {exc}") from exc
            clock.saw(reply[-1], sent)
            return _outcome(reply, checks)
        groups = _by_slot(checks) if self._cluster else [list(range(len(checks)))]
        if len(groups) == 1:
            try:
                return _outcome(await self._reserve_on_master(checks), checks)
            except RedisUnavailable as exc:
                raise LimiterUnavailable(f"redis: {exc}") from exc
        return await self._reserve_by_slot(checks, groups)

    async def _reserve_on_master(self, checks: list[Check]) -> Any:
        """A cluster's reservation of checks of one slot, bounded by the clock of the master serving it (asked first
        if it has none yet), as reserve() does on one server: its reply, timed (its last item that master's now).

        A call redirected (MOVED, ASK: the slot moved, a replica took over) runs on a master whose clock is not the
        one its bound was made from: found stale, it is made once more without the bound, as when a clock steps;
        not found stale, it is applied as before there was a bound. The map is right again after the redirection."""
        client = cast("ClusterClient", self._client)
        node = await client.master_of(slot(checks[0].key))
        clock = self._clocks.get(node.name)
        if clock is None:
            if len(self._clocks) >= 64:  # masters come and go with failovers: the clocks of gone ones are dropped
                self._clocks.clear()
            clock = self._clocks[node.name] = RedisClock(self._timeout_s)
        if not clock.base:  # no reply yet: this master's clock first, so that no reservation goes without a bound
            await clock.learn(client, node)
        amounts = [c.cost for c in checks]
        sent = time.monotonic()
        reply = await self._call("r", checks, amounts, clock.bound(sent))
        if reply[0] == 2:  # stale by the bound: that master's clock stepped forward (or another master ran it)
            clock.saw(int(reply[1]), sent)
            reply = await self._call("r", checks, amounts, 0)
        clock.saw(int(reply[-1]), sent)
        return reply

    async def _reserve_by_slot(self, checks: list[Check], groups: list[list[int]]) -> Outcome:
        calls = [self._reserve_on_master([checks[i] for i in group]) for group in groups]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        merged = Outcome(ok=True, remaining=[0.0] * len(checks), reset_ms=[0.0] * len(checks))
        refused: Outcome | None = None
        failure: BaseException | None = None
        taken: list[int] = []  # checks of the groups that admitted
        for reply, group in zip(replies, groups, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
                continue  # raised below, once what the others took is given back
            outcome = _outcome(reply, [checks[i] for i in group])
            if not outcome.ok:
                failed = group[outcome.failed]
                if refused is None or failed < refused.failed:  # the first refusing check, as one call would say
                    refused = Outcome(ok=False, failed=failed, retry_ms=outcome.retry_ms)
                continue
            taken += group
            for j, i in enumerate(group):
                merged.remaining[i], merged.reset_ms[i] = outcome.remaining[j], outcome.reset_ms[j]
                if checks[i].kind == CONCURRENCY:  # by its own master's clock (merged.at_ms is one master's)
                    checks[i] = checks[i].held_since(outcome.at_ms)
            merged.at_ms = outcome.at_ms
            merged.soft_crossed += [group[j] for j in outcome.soft_crossed]
        if failure is None and refused is None:
            merged.soft_crossed.sort()
            return merged
        # All or nothing: what the groups that admitted took is given back (a settlement, sent in the background).
        if taken:
            self.settle([(checks[i], -checks[i].cost) for i in taken])
        if isinstance(failure, RedisUnavailable):
            raise LimiterUnavailable(f"redis: {failure}") from failure
        if failure is not None:
            raise failure
        assert refused is not None
        return refused

    async def peek(self, checks: list[Check]) -> list[float]:
        if not checks:
            return []
        groups = _by_slot(checks) if self._cluster else [list(range(len(checks)))]
        taken = [0.0] * len(checks)
        calls = [self._call("p", [checks[i] for i in g], [0.0] * len(g)) for g in groups]
        replies = await asyncio.gather(*calls, return_exceptions=True)  # every call ended, whatever one raised
        for reply, group in zip(replies, groups, strict=True):
            if isinstance(reply, RedisUnavailable):
                raise LimiterUnavailable(f"redis: {reply}") from reply
            if isinstance(reply, BaseException):
                raise reply
            for i, value in zip(group, reply, strict=True):
                taken[i] = float(value)
        return taken

    def settle(self, items: list[tuple[Check, float]]) -> None:
        self._pending.extend(items)
        self._idle.clear()
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = tasks.spawn(self._flush_loop(), name="ratelimit-settle")

    async def flush(self) -> None:
        """Wait until every queued settlement has been sent (or dropped after a failure)."""
        await self._idle.wait()

    @property
    def settled(self) -> bool:
        """Whether every queued settlement has been sent (or dropped): flush() for a caller outside the loop."""
        return self._idle.is_set() and not self._pending

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:500], self._pending[500:]
                await self._send(batch)
            self._idle.set()

    async def _send(self, batch: list[tuple[Check, float]]) -> None:
        groups = _by_slot([check for check, _ in batch]) if self._cluster else [list(range(len(batch)))]
        calls = [self._call("s", [batch[i][0] for i in g], [batch[i][1] for i in g]) for g in groups]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for bug in (r for r in replies if isinstance(r, BaseException) and not isinstance(r, RedisUnavailable)):
            raise bug
        for exc in (r for r in replies if isinstance(r, RedisUnavailable)):
            # Lost settlements leave a reservation standing: tokens come back as the bucket refills, a
            # concurrency slot when its lease expires. Counted, not retried, so a dead Redis cannot pile them up.
            logger.debug("ratelimit settlements dropped: %s", exc)
            if self._on_error is not None:
                self._on_error()

    async def _call(self, mode: str, checks: list[Check], amounts: list[float], stale_after: int | None = None) -> Any:
        """One script call on checks of one slot: reserve (r), settle (s) or peek (p), each with its amount; a
        reservation's stale_after, when given, is the script's last argument (RedisClock.bound, 0: never)."""
        if self._one is not None:
            return await self._script.call_packed(self._one, *_command(mode.encode(), checks, amounts))
        args: list[float | int | str] = [mode]
        for check, amount in zip(checks, amounts, strict=True):
            args += check.args(amount)
        if stale_after is not None:
            args.append(stale_after)
        return await self._script(keys=[c.key for c in checks], args=args)

    async def close(self) -> None:
        if self._pending:
            try:
                async with asyncio.timeout(2.0):
                    await self.flush()
            except TimeoutError:
                pass
        await tasks.cancel(self._flusher)
        await self._client.close()


def _fixed(check: Check) -> tuple[bytes, bytes, bytes]:
    """A check's key, its first four arguments (kind, limit, capacity, window) and its last (soft) as RESP bulk
    strings, kept on the shared check it was taken from (Check.origin): made once for all its requests."""
    shared = check.origin or check
    encoded = shared.encoded
    if encoded is None:
        head = bulk(shared.kind) + bulk(shared.limit) + bulk(shared.capacity) + bulk(shared.window_ms)
        encoded = shared.encoded = (bulk(shared.key), head, bulk(shared.soft))
    return encoded


_MODES = {mode: bulk(mode) for mode in (b"r", b"s", b"p")}


def _command(
    mode: bytes, checks: list[Check], amounts: list[float], stale_after: bytes | None = None
) -> tuple[int, bytes]:
    """limits.lua's arguments after its SHA, as `_call`'s list packed by hiredis gives them (the key count, the
    keys, the mode, six per check: Check.args, then, when given, the bulk string of the time past which a
    reservation is stale), and how many bulk strings they are."""
    fixed = [_fixed(check) for check in checks]
    parts = [bulk(len(checks))]
    parts += [key for key, _, _ in fixed]
    parts.append(_MODES[mode])
    for (_, head, soft), amount in zip(fixed, amounts, strict=True):
        parts += (head, _amount(amount), soft)
    if stale_after is None:
        return 2 + 7 * len(checks), b"".join(parts)
    parts.append(stale_after)
    return 3 + 7 * len(checks), b"".join(parts)


class RedisClock:
    """A bound of Redis's clock (TIME, in ms), so that a reservation Redis runs only after its caller gave up on it
    is not applied.

    A reservation that gets no answer within the timeout fails (the request goes on per-process limits), but its
    command may be in Redis's socket already: a Redis stalled (SIGSTOP, a long fork, a swapped-out page) runs it
    when it resumes, and the counters then hold a reservation no request uses: a rate limit stricter than it is
    until it refills, a concurrency slot taken until its lease ends (26-29 of 30 admitted, by hrev's test). So each
    reservation says when it is stale, by Redis's clock: later than its send and the timeout. Each reply says when
    it ran (Redis's now); Redis's clock at the next send is at most that now plus the local time elapsed since the
    call that got it was sent (it ran after its send), so a call answered within its timeout is never stale, clock
    skew between the hosts whatever. A reply that says stale all the same (Redis's clock stepped forward) teaches
    the clock again, and the call is made once more without the bound. Before its first reservation, the limiter
    asks Redis's clock (one TIME call), so that none is ever sent without a bound."""

    __slots__ = ("timeout_ms", "base", "sent")

    MARGIN_MS = 5  # TIME's milliseconds are floored, and two clocks' rates differ a little

    def __init__(self, timeout_s: float) -> None:
        self.timeout_ms = timeout_s * 1000
        # The bound of a call sent at s (time.monotonic()) is base + s * 1000; 0: no reply yet, no bound.
        self.base = 0.0
        self.sent = 0.0  # time.monotonic() when the call of the last reply was sent

    def stale_after(self, sent: float) -> bytes:
        """For a call sent at `sent` (time.monotonic()): the time, by Redis's clock, past which it is stale, as the
        script's last argument (a RESP bulk string; 0: never)."""
        if not self.base:
            return NEVER_STALE
        digits = b"%d" % (self.base + sent * 1000)  # not bound(): one call fewer a request
        return b"$%d\r\n%s\r\n" % (len(digits), digits)

    def bound(self, sent: float) -> int:
        """stale_after's time as a number (0: never)."""
        return int(self.base + sent * 1000) if self.base else 0

    async def learn(self, client: RespClient | ClusterClient, node: Any = None) -> None:
        """Redis's clock, asked (TIME; on a cluster, of the master `node`): what the first reservation's bound is made
        from. Redis stalled, this call fails, and no reservation is left in its socket."""
        sent = time.monotonic()
        if node is None:
            seconds, micros = await client.call("TIME")
        else:
            seconds, micros = await cast("ClusterClient", client).call("TIME", target_nodes=node)
        self.saw(int(seconds) * 1000 + int(micros) // 1000, sent)

    def saw(self, redis_ms: int, sent: float) -> None:
        """A reply of a call sent at `sent` ran at `redis_ms`."""
        if sent >= self.sent:
            self.sent = sent
            self.base = redis_ms - sent * 1000 + self.timeout_ms + self.MARGIN_MS


NEVER_STALE = bulk(0)


_AMOUNTS: dict[float, bytes] = {}


def _amount(value: float) -> bytes:
    """bulk(value), remembered for the amounts that recur (a request's 1.0, a slot's -1.0, the same estimate for the
    same prompt): a float's repr costs ~2,700 instructions. Not 0.0, which would be found for -0.0."""
    if type(value) is not float or not value:
        return bulk(value)
    encoded = _AMOUNTS.get(value)
    if encoded is None:
        if len(_AMOUNTS) >= 4096:
            _AMOUNTS.clear()
        encoded = _AMOUNTS[value] = bulk(value)
    return encoded


def _outcome(raw: Any, checks: list[Check]) -> Outcome:
    """limits.lua's reply to a reservation of checks, made with a stale_after (its last item Redis's now, the
    reservation's at_ms)."""
    if int(raw[0]) == 0:
        return Outcome(ok=False, failed=int(raw[1]) - 1, retry_ms=float(raw[2]))
    n = len(checks)
    return Outcome(
        ok=True,
        at_ms=raw[-1],
        remaining=[float(v) for v in raw[1 : n + 1]],
        reset_ms=[float(v) for v in raw[n + 1 : 2 * n + 1]],
        soft_crossed=[int(v) - 1 for v in raw[2 * n + 1 : -1]],
    )


def _by_slot(checks: list[Check]) -> list[list[int]]:
    """Indexes of the checks, grouped by hash slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, check in enumerate(checks):
        groups.setdefault(slot(check.key), []).append(i)
    return list(groups.values())


@functools.lru_cache(maxsize=65_536)
def slot(key: str) -> int:
    """The Redis Cluster hash slot of a key (CRC16 of its {tag}); remembered, as a subject's keys recur."""
    return key_slot(key.encode())
