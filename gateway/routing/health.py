"""The health of each deployment: breaker, in-flight count, latency averages, drain flag, retry budget.

Each worker keeps its own copy for the hot path (no network round trip per request) and syncs it through the
state backend in the background: a breaker opened or a deployment drained by one worker or replica reaches the
others within `routing.breaker.sync_interval_s`, and latency averages are shared the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


def _ewma(current: float, sample: float) -> float:
    return sample if current == 0.0 else current + EWMA_ALPHA * (sample - current)


class DeploymentHealth:
    __slots__ = (
        "deployment", "id", "span", "breaker", "budget", "in_flight", "latency_s", "ttft_s", "drained", "opened_at",
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
        self.opened_at = 0.0  # wall time this worker last opened the breaker, or took it open from another
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
            health.opened_at = self.wall()
            until = health.opened_at + cooldown
            spawn(self._share(f"gw:brk:{deployment_id}", {"until": str(until), "level": str(breaker.level)}, cooldown),
                  name="breaker-share")  # fmt: skip
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
        a worker closes a breaker it opened (or took open) before then, not one that opened again since."""
        health = self.deployments[deployment_id]
        health.breaker.reset()
        self.events.emit("breaker_reset", deployment=deployment_id)
        mark = {"until": "0", "level": "0", "reset": repr(self.wall())}
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

    async def sync(self) -> None:
        """Pull breakers and drains opened elsewhere; push this worker's latency averages, pull everyone's."""
        ttl = self.config.breaker.sync_interval_s * 5
        now_wall, now = self.wall(), self.clock()
        for deployment_id, health in list(self.deployments.items()):
            shared = await self.state.hgetall(f"gw:brk:{deployment_id}")
            if shared:
                remaining = float(shared.get("until", 0)) - now_wall
                if remaining > 0 and health.breaker.force_open(now + remaining, int(shared.get("level", 0))):
                    health.opened_at = now_wall
                reset_at = float(shared.get("reset", 0))
                if health.breaker.state != "closed" and health.opened_at < reset_at:
                    health.breaker.reset()  # reset by an operator elsewhere (who had the event emitted)
                    logger.info("routing: breaker of %s reset through another worker or replica", deployment_id)
            health.drained = await self.state.get(f"gw:drain:{deployment_id}") == "1"
            key = f"gw:lat:{deployment_id}"
            if health.latency_s or health.ttft_s:
                value = f"{health.latency_s:.6f},{health.ttft_s:.6f},{now_wall:.3f}"
                await self.state.hset(key, {self.worker: value}, ttl_s=ttl)
            # The hash's TTL is renewed by every write, so the field of a worker that is gone (a replica killed or
            # replaced, a worker restarted) would stay and weigh on the average for ever: each value is dated and
            # one older than the TTL left out. (A value without a date is from a gateway before this one.)
            samples = [
                sample
                for sample in (tuple(map(float, v.split(","))) for v in (await self.state.hgetall(key)).values())
                if len(sample) < 3 or now_wall - sample[2] <= ttl
            ]
            latencies = [s[0] for s in samples if s[0]]
            ttfts = [s[1] for s in samples if len(s) > 1 and s[1]]
            if latencies:
                health.latency_s = sum(latencies) / len(latencies)
            if ttfts:
                health.ttft_s = sum(ttfts) / len(ttfts)
