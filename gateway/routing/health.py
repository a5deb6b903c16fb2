"""The health of each deployment: breaker, in-flight count, latency averages, drain flag, retry budget.

Each worker keeps its own copy for the hot path (no network round trip per request) and syncs it through the
state backend in the background: a breaker opened or a deployment drained by one worker or replica reaches the
others within `routing.breaker.sync_interval_s`, and latency averages are shared the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any

from gateway.config import Deployment, RoutingConfig
from gateway.routing.breaker import Breaker, Transition
from gateway.routing.retry import RetryBudgetTracker
from gateway.state.base import StateBackend, StateUnavailable
from gateway.tasks import cancel, spawn
from gateway.telemetry.events import Events
from gateway.types import Clock

logger = logging.getLogger("gateway.routing")

EWMA_ALPHA = 0.3
# The reset mark an opening leaves: none. A number, as a gateway before this one reads the mark ("" had stopped its
# sync); its 0 is older than any opening, so it closes nothing there either.
NO_RESET = "0"


def _ewma(current: float, sample: float) -> float:
    return sample if current == 0.0 else current + EWMA_ALPHA * (sample - current)


def _number(text: str | None) -> float:
    """A number from the shared state; 0 for none or one this code cannot read (another version's, a hand edit)."""
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


class DeploymentHealth:
    __slots__ = (
        "deployment", "id", "span", "breaker", "budget", "in_flight", "latency_s", "ttft_s", "drained", "reset_seen",
        "_minute", "_rpm", "_tpm",
    )  # fmt: skip

    def __init__(self, deployment: Deployment, config: RoutingConfig) -> None:
        self.deployment = deployment
        self.id = deployment.id  # made once: Deployment.id is a property that formats it
        self.span = f"attempt:{self.id}"  # the name of an attempt's span in the record
        self.breaker = Breaker(config.breaker)
        self.budget = RetryBudgetTracker(config.retry_budget)
        self.in_flight = 0
        self.latency_s = 0.0  # EWMA of whole-answer latency (shared)
        self.ttft_s = 0.0  # EWMA of time to first token of streams (shared)
        self.drained = False
        self.reset_seen = ""  # the last operator's reset (its id in the shared breaker) this worker applied or made
        self._minute = 0
        self._rpm = 0
        self._tpm = 0

    def available(self, now: float) -> bool:
        """Not drained, breaker closed (or free to probe), and under its rpm/tpm capacity this minute."""
        if self.drained:
            return False
        breaker = self.breaker
        if breaker.state != "closed" and not breaker.available(now):
            return False
        deployment = self.deployment
        if not deployment.rpm and not deployment.tpm:  # no capacity of its own: nothing to count against
            return True
        if int(now // 60) != self._minute:
            return True
        return (not deployment.rpm or self._rpm < deployment.rpm) and (not deployment.tpm or self._tpm < deployment.tpm)

    def started(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._rpm, self._tpm = minute, 0, 0
        self._rpm += 1
        self.in_flight += 1

    def used_tokens(self, tokens: int) -> None:
        self._tpm += tokens

    def snapshot(self, now: float) -> dict[str, Any]:
        d, b = self.deployment, self.breaker
        return {
            "id": d.id,
            "provider": d.provider,
            "model": d.model,
            "region": d.region,
            "tags": d.tags,
            "state": "drained" if self.drained else b.state,
            "breaker": b.state,
            "drained": self.drained,
            "in_flight": self.in_flight,
            "consecutive_failures": b.consecutive,
            "open_for_s": round(max(0.0, b.open_until - now), 3) if b.state == "open" else 0.0,
            "latency_ms": round(self.latency_s * 1000, 3),
            "ttft_ms": round(self.ttft_s * 1000, 3),
            "retry_budget": round(self.budget.tokens, 2),
        }


class HealthRegistry:
    def __init__(
        self,
        deployments: Iterable[Deployment],
        config: RoutingConfig,
        state: StateBackend,
        events: Events,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        # The router reads `clock` too: breakers, retry budgets and capacity windows all run on it. `wall` dates
        # what is shared with other processes (an open breaker's end), whose monotonic clocks differ.
        self.clock = clock
        self.wall = wall
        self.config = config
        self.state = state
        self.events = events
        self.deployments: dict[str, DeploymentHealth] = {}
        for deployment in deployments:
            self.deployments.setdefault(deployment.id, DeploymentHealth(deployment, config))
        self._task: asyncio.Task[None] | None = None
        self.state_errors = 0
        self.worker = f"{os.getpid()}-{os.urandom(3).hex()}"  # this registry's field in the shared latency hashes
        # Per shared latency hash, per field: its value when last seen to change, and when (this worker's clock).
        self._latency_seen: dict[str, dict[str, tuple[str, float]]] = {}

    def get(self, deployment: Deployment) -> DeploymentHealth:
        health = self.deployments.get(deployment.id)
        if health is None:  # a wildcard model's deployment, made per request
            health = self.deployments[deployment.id] = DeploymentHealth(deployment, self.config)
        return health

    def succeeded(self, health: DeploymentHealth, *, latency_s: float = 0.0, ttft_s: float = 0.0) -> None:
        if latency_s:
            health.latency_s = _ewma(health.latency_s, latency_s)
        if ttft_s:
            health.ttft_s = _ewma(health.ttft_s, ttft_s)
        transition = health.breaker.record(True, self.clock())
        if transition is not None:
            self._transition(health, transition)

    def failed(self, health: DeploymentHealth, reason: str) -> None:
        transition = health.breaker.record(False, self.clock())
        self._transition(health, transition, reason)

    def _transition(self, health: DeploymentHealth, transition: Transition, reason: str = "") -> None:
        if transition is None:
            return
        deployment_id = health.deployment.id
        breaker = health.breaker
        if transition == "opened":
            cooldown = breaker.cooldown_s()
            self.events.emit("breaker_open", deployment=deployment_id, cooldown_s=cooldown, reason=reason)
            until = self.wall() + cooldown
            # An opening clears the mark of an earlier reset (see reset): that reset is over, this one must stand.
            shared = {"until": str(until), "level": str(breaker.level), "reset": NO_RESET}
            spawn(self._share(f"gw:brk:{deployment_id}", shared, cooldown), name="breaker-share")
        else:
            self.events.emit("breaker_close", deployment=deployment_id)
            spawn(self._unshare(f"gw:brk:{deployment_id}"), name="breaker-share")

    async def _share(self, key: str, values: dict[str, str], ttl_s: float) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.state.hset(key, values, ttl_s=ttl_s + 1)

    async def _unshare(self, key: str) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.state.delete(key)

    # -- operator actions, shared with every worker -------------------------------------------------------------
    async def drain(self, deployment_id: str, drained: bool) -> None:
        health = self.deployments[deployment_id]
        health.drained = drained
        self.events.emit("deployment_drained" if drained else "deployment_undrained", deployment=deployment_id)
        if drained:
            await self.state.set(f"gw:drain:{deployment_id}", "1")
        else:
            await self.state.delete(f"gw:drain:{deployment_id}")

    async def reset(self, deployment_id: str) -> None:
        """Close the breaker here and, through the state backend, in every worker and replica: an operator's reset
        reaches one replica through a load balancer, and the deployment must come back on all. The mark says when:
        a worker closes a breaker it opened (or took open) before then, not one that opened again since.

        "Before" is told by the shared hash's order, not by clocks: the reset writes a mark with an id of its own,
        and an opening anywhere clears it. A worker that finds a mark it has not applied yet closes its breaker
        once; one opened since has cleared the mark. (A reset's wall time, compared with each replica's, had let a
        replica whose clock was ahead close breakers opened after the reset for as long as it was ahead, and one
        that was behind leave open those opened before it.)"""
        health = self.deployments[deployment_id]
        health.breaker.reset()
        self.events.emit("breaker_reset", deployment=deployment_id)
        # Its wall time, as a gateway before this one wrote it and still reads it (a number), taken as an id here.
        health.reset_seen = repr(self.wall())
        mark = {"until": "0", "level": "0", "reset": health.reset_seen}
        # Kept as long as a breaker can stay open: a worker that syncs later still sees it.
        await self.state.hset(f"gw:brk:{deployment_id}", mark, ttl_s=self.config.breaker.max_cooldown_s + 1)

    # -- background sync -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = spawn(self._sync_forever(), name="health-sync")

    async def close(self) -> None:
        await cancel(self._task)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.breaker.sync_interval_s)
            try:
                await self.sync()
            except StateUnavailable as exc:
                self.state_errors += 1
                logger.warning("routing: cannot sync deployment health through the state backend: %s", exc)
            except Exception:  # a bug, or a value in the shared state this code cannot read: the next round goes on
                self.state_errors += 1
                logger.exception("routing: deployment health sync failed")

    async def _live_latencies(self, key: str, ttl_s: float) -> list[str]:
        """The values in a shared latency hash of the workers that are still writing, each sync; the others' fields
        are removed. The hash's TTL is renewed by every write, so the field of a worker that is gone (a replica
        killed or replaced, a worker restarted) would stay for ever: weighing on the average, and the hash growing
        with every restart. Each value is dated by its writer, so it changes at every write; one that has not
        changed for the TTL, on this worker's clock, is a dead worker's. No clocks are compared: a replica whose
        clock is ahead or behind is neither kept when gone nor left out when alive."""
        fields = await self.state.hgetall(key)
        now = self.clock()
        seen = self._latency_seen.setdefault(key, {})
        for name in set(seen) - set(fields):
            del seen[name]
        live, dead = [], []
        for name, value in fields.items():
            before = seen.get(name)
            if before is None or before[0] != value:
                seen[name] = (value, now)
            elif now - before[1] > ttl_s:
                dead.append(name)
                continue
            live.append(value)
        if dead:
            await self.state.hdel(key, dead)
            for name in dead:
                del seen[name]
        return live

    async def sync(self) -> None:
        """Pull breakers and drains opened elsewhere; push this worker's latency averages, pull everyone's."""
        ttl = self.config.breaker.sync_interval_s * 5
        now_wall, now = self.wall(), self.clock()
        for deployment_id, health in list(self.deployments.items()):
            shared, left_s = await self.state.hgetall_ttl(f"gw:brk:{deployment_id}")
            if shared:
                # Open while the opener's hash lives (its TTL is the cooldown and 1 s: see _share), on a timer all
                # replicas read alike: a wall-clock `until` compared with each replica's clock had kept a breaker
                # open for as long again as the opener's clock was ahead, and never if it was a cooldown behind.
                # `until` is still written, for a gateway before this one.
                opened = _number(shared.get("until")) > 0
                remaining = left_s - 1 if opened and left_s is not None else 0.0
                if remaining > 0:
                    health.breaker.force_open(now + remaining, int(_number(shared.get("level"))))
                mark = shared.get("reset", "")
                if mark not in ("", NO_RESET) and mark != health.reset_seen:
                    health.reset_seen = mark
                    if health.breaker.state != "closed":
                        health.breaker.reset()  # reset by an operator elsewhere (who had the event emitted)
                        logger.info("routing: breaker of %s reset through another worker or replica", deployment_id)
            health.drained = await self.state.get(f"gw:drain:{deployment_id}") == "1"
            key = f"gw:lat:{deployment_id}"
            if health.latency_s or health.ttft_s:
                value = f"{health.latency_s:.6f},{health.ttft_s:.6f},{now_wall:.3f}"
                await self.state.hset(key, {self.worker: value}, ttl_s=ttl)
            samples = [tuple(map(_number, v.split(","))) for v in await self._live_latencies(key, ttl)]
            latencies = [s[0] for s in samples if s[0]]
            ttfts = [s[1] for s in samples if len(s) > 1 and s[1]]
            if latencies:
                health.latency_s = sum(latencies) / len(latencies)
            if ttfts:
                health.ttft_s = sum(ttfts) / len(ttfts)
