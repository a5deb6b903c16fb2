"""What /health/ready says: whether this replica can serve requests, and the state of what it depends on.

Only what stops this replica from serving makes it unready (503): draining, no usable configuration (no model with
a deployment), or no deployment at all available (every breaker open, every deployment drained). The store, the
state backend and the sinks are reported, never a reason to take the replica out: requests succeed while they are
down (records wait in the spool, limits fail open or closed as configured), and a probe that turned a telemetry
outage into 503 on every replica would turn it into a full outage.

Each dependency's state is one of `ok`, `spooling` (records wait on disk: the sink fails, or catches up),
`retrying` (its last write failed; records wait in memory), `stalled` (a write or a ping took longer than its
bound: it hangs) and `down` (it refuses: a ping failed), or `disabled`. The same states are in
`gateway_component_state{component, state}` (1 for the current one), beside `gateway_ready`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Gauge

from gateway.routing.health import DeploymentHealth, HealthRegistry
from gateway.sinks.outbox import Outbox, SinkState

State = SinkState | Literal["down"]
STATES: tuple[State, ...] = ("ok", "spooling", "retrying", "stalled", "down")
PING_TIMEOUT_S = 0.5  # a probe's own timeout is often 1 s: a hung dependency must not make readiness miss it
DEPLOYMENT_STATES = ("closed", "half-open", "open", "drained")  # gateway_deployments{state}
STATE_BACKEND = "state_backend"  # the component label of the state backend; the store and sinks go by their names


class Pingable(Protocol):
    async def ping(self) -> None: ...


class PolicyState(Protocol):
    @property
    def error(self) -> str | None: ...


class CacheState(Protocol):
    def status(self) -> str: ...


class Served(Protocol):
    """What readiness reads of the running gateway (gateway/runtime.py's Gateway): the parts, not the whole."""

    @property
    def draining(self) -> bool: ...
    @property
    def models(self) -> Mapping[str, object]: ...
    @property
    def state(self) -> Pingable: ...
    @property
    def store(self) -> Pingable | None: ...
    @property
    def policies(self) -> PolicyState: ...
    @property
    def health(self) -> HealthRegistry: ...
    @property
    def outboxes(self) -> Sequence[Outbox]: ...
    @property
    def cache(self) -> CacheState | None: ...


class Readiness:
    def __init__(self, gateway: Served, registry: CollectorRegistry) -> None:
        self.gateway = gateway
        self._ready = Gauge(
            "gateway_ready", "1 while this replica can serve (/health/ready is 200).", registry=registry,
            multiprocess_mode="livemin",
        )  # fmt: skip
        self._states = Gauge(
            "gateway_component_state",
            "1 for the current state (ok, spooling, retrying, stalled, down) of the state backend, the store and each "
            "sink.",
            ["component", "state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._deployments = Gauge(
            "gateway_deployments",
            "Deployments by the state of their breaker as this replica sees it (closed, half-open, open), or drained.",
            ["state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        # What the last pings found: between them (a /metrics scrape) the states are told without network I/O.
        self._pinged: dict[str, State | None] = {}

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, checks): pings the state backend and the store (concurrently, each bounded), then reports."""
        gateway = self.gateway
        state_ping, store_ping = await asyncio.gather(
            _ping(gateway.state), _ping(gateway.store) if gateway.store is not None else _none()
        )
        self._pinged = {STATE_BACKEND: state_ping[0], "store": store_ping[0]}
        ready, checks = self.report()
        if state_ping[1]:
            checks["state"] = f"{checks['state']}: {state_ping[1]}"
        if store_ping[1] and gateway.store is not None:
            checks["store"] = f"{checks['store']}: {store_ping[1]}"
        return ready, checks

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, checks) from what is known now, without I/O; sets the gauges."""
        gateway = self.gateway
        ready, serving = self._serving()
        self._count_deployments()
        components = self._components()
        self._ready.set(1 if ready else 0)
        for component, state in components.items():
            for each in STATES:
                self._states.labels(component, each).set(1 if each == state else 0)
        checks: dict[str, Any] = {
            **serving,
            "state": components[STATE_BACKEND],
            "store": components.get("store", "disabled") if gateway.store is not None else "disabled",
            "sinks": {name: state for name, state in components.items() if name not in (STATE_BACKEND, "store")},
            # A broken policy file leaves the previous set in force: serving stays safe, so readiness holds, but the
            # details say so until the file is fixed.
            "policies": f"failed to reload: {gateway.policies.error}" if gateway.policies.error else "ok",
        }
        if gateway.cache is not None:  # its backend: while it fails, requests go on without the cache (a miss each)
            checks["cache"] = gateway.cache.status()
        return ready, checks

    def _serving(self) -> tuple[bool, dict[str, str]]:
        """Whether this replica can serve, and each reason's finding."""
        gateway = self.gateway
        deployments = gateway.health.deployments.values()
        now = time.monotonic()
        available = sum(1 for h in deployments if not h.drained and h.breaker.available(now))
        if not deployments:
            usable = "none configured"
        elif available:
            usable = f"{available} of {len(deployments)} available"
        else:
            usable = f"none available: all {len(deployments)} with their breaker open or drained"
        checks = {
            "draining": "yes" if gateway.draining else "no",
            "config": "ok" if gateway.models else "unusable: no model has a deployment whose provider is enabled",
            "deployments": usable,
        }
        return not gateway.draining and bool(gateway.models) and available > 0, checks

    def _count_deployments(self) -> None:
        counts = dict.fromkeys(DEPLOYMENT_STATES, 0)
        now = time.monotonic()
        for health in self.gateway.health.deployments.values():
            counts[_deployment_state(health, now)] += 1
        for state, count in counts.items():
            self._deployments.labels(state).set(count)

    def _components(self) -> dict[str, State]:
        gateway = self.gateway
        states: dict[str, State] = {STATE_BACKEND: self._pinged.get(STATE_BACKEND) or "ok"}
        store: object = gateway.store  # the store's outbox is the one whose sink is the store itself
        for outbox in gateway.outboxes:
            state: State = outbox.state
            pinged = self._pinged.get(outbox.name) if outbox.sink is store else None
            # The ping's finding wins when it is worse than the outbox's (no write lately to find it out).
            if pinged is not None and STATES.index(pinged) > STATES.index(state):
                state = pinged
            states[outbox.name] = state
        return states


def _deployment_state(health: DeploymentHealth, now: float) -> str:
    """An open breaker whose cooldown is over is half-open: the next request probes it (Breaker.allow)."""
    if health.drained:
        return "drained"
    breaker = health.breaker
    if breaker.state == "open" and now < breaker.open_until:
        return "open"
    return "closed" if breaker.state == "closed" else "half-open"


async def _none() -> tuple[State | None, str]:
    return None, ""


async def _ping(component: Any) -> tuple[State | None, str]:
    """(state, why): None when it answered."""
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            await component.ping()
    except TimeoutError:
        return "stalled", f"no answer within {PING_TIMEOUT_S}s"
    except Exception as exc:  # noqa: BLE001 - any failure is a state, described
        return "down", type(exc).__name__
    return None, ""
