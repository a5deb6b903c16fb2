"""RateLimits: the rate-limit counters of one gateway, one component that the ratelimit filter (which reserves
and settles) and GET /admin/usage (which reads) share.

It turns limit rules into Checks on counters (one counter per scope, identity and kind, whatever rule caps it),
and holds the limiter behind them: Redis with per-process failover (limiter_failover.py), or memory alone. It
reads the caller's and a policy's limits through small protocols: state imports nothing above it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.config import LimitRule, LimitsConfig
from gateway.config.redis_url import is_cluster
from gateway.state.limiter import BUCKET, BUDGET, CONCURRENCY, REQUESTS, TOKENS, WINDOW, Check, Limiter, Outcome
from gateway.state.limiter_failover import Failover
from gateway.state.limiter_memory import MemoryLimiter
from gateway.types import Clock

# Counter keys. On one Redis (and in memory) every counter shares one hash tag, as it always has: the names stay
# those of earlier versions, so an upgrade keeps what was counted and spent. On a Redis Cluster each subject (a key,
# team, project, model, IP, or the global counter) has its own tag, `gw:rl:{scope:ident}:...`: its counters share a
# slot, and the subjects spread over every master. A request whose limits name several subjects reserves them
# slot by slot (limiter_redis.py).
PREFIX = "{gw:rl}:"


def counter_prefix(scope: str, ident: str, *, cluster: bool) -> str:
    """What every counter key of one subject begins with."""
    return f"gw:rl:{{{scope}:{ident}}}:" if cluster else f"{PREFIX}{scope}:{ident}:"


class RateLimits:
    def __init__(
        self, config: LimitsConfig, *, lease_ms: int, registry: CollectorRegistry, clock: Clock = time.time
    ) -> None:
        self.sliding = config.algorithm == "sliding-window"
        self.rules = list(config.rules)
        self.has_ip_rules = any(r.scope == "ip" for r in self.rules)
        self.soft = config.soft_pct / 100
        self.cluster = is_cluster(config.backend)
        # A slot held by a process that died comes back when its lease lapses: longer than any request may take.
        self.lease_ms = lease_ms
        self.clock = clock
        self._periods: tuple[float, dict[str, tuple[str, int]]] = (-1.0, {})
        self._made: dict[tuple[str, str, LimitRule], tuple[Check, ...]] = {}  # add()'s checks, by rule and identity
        self._made_at = -1.0
        errors = Counter(
            "gateway_ratelimit_backend_errors", "Failed calls to the rate-limit backend (Redis).", registry=registry
        )
        degraded = Gauge(
            "gateway_ratelimit_degraded", "1 while Redis is unreachable and limits are per process (or refused).",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        primary: Limiter | None = None
        if config.backend != "memory":
            from gateway.state.limiter_redis import RedisLimiter

            primary = RedisLimiter(config.backend, timeout_s=config.timeout_ms / 1000, on_error=errors.inc)
        self.failover = Failover(
            primary,
            fail_open=config.fail == "open",
            retry_interval_s=config.retry_interval_s,
            errors=errors,
            degraded=degraded,
            local=MemoryLimiter(clock),  # the same wall clock as the periods (Redis's TIME on the primary)
        )
        # All the checks or none, and the limiter that answered, to settle on (Redis, or this process's own):
        # the failover's own method, bound here so that a request awaits no extra layer.
        self.reserve: Callable[[list[Check]], Awaitable[tuple[Outcome, Limiter]]] = self.failover.reserve

    async def usage(
        self, scope: str, ident: str, own: LimitRule | None, name: str = ""
    ) -> list[tuple[Check, str, float]]:
        """(check, budget period or "", taken now) for every limit on one key (of id `ident` and this `name`), team
        or project: the counters that its requests reserve against, built by the same code (GET /admin/usage)."""
        found: dict[str, Check] = {}
        periods: dict[str, str] = {}
        names = (ident, name) if scope == "key" and name else (ident,)
        rules = [r for r in self.rules if r.scope == scope and (not r.match or r.match in names)]
        for rule in [*rules, own] if own is not None else rules:
            self.add(found, scope, ident, rule)
            if rule.budget_usd:
                base = counter_prefix(scope, ident, cluster=self.cluster)
                periods[f"{base}usd:{self.period(rule.period)[0]}"] = rule.period
        checks = list(found.values())
        taken = await self.failover.peek(checks) if checks else []
        return [(check, periods.get(check.key, ""), used) for check, used in zip(checks, taken, strict=True)]

    async def reset_budgets(
        self, scope: str, ident: str, own: LimitRule | None, name: str = ""
    ) -> list[tuple[str, float]]:
        """Start the current period of every budget on one key, team or project anew: what was spent is taken back
        (a negative settle of what peek reads) on the limiter admission uses now — Redis, or this process's own
        while Redis is away. (period, what had been spent) for each budget."""
        counters = await self.usage(scope, ident, own, name)
        budgets = [(check, period, taken) for check, period, taken in counters if check.kind == BUDGET]
        spent = [(check, -taken) for check, _, taken in budgets if taken > 0]
        if spent:
            failover = self.failover
            primary = failover.primary
            (primary if primary is not None and not failover.degraded else failover.local).settle(spent)
        return [(period, taken) for _, period, taken in budgets]

    def add(self, found: dict[str, Check], scope: str, ident: str, rule: LimitRule) -> None:
        """The checks of one rule for one identity, into `found` (by counter key, the stricter kept). They are
        shared by every request of that identity for up to a second (a budget's key and time to the period's end
        move with the clock): a caller that sets a cost puts a copy in their place (Check.taking)."""
        now = self.clock()
        if now - self._made_at >= 1.0 or len(self._made) >= 10_000:
            self._made.clear()
            self._made_at = now
        made = self._made.get((scope, ident, rule))
        if made is None:
            made = self._made[(scope, ident, rule)] = self._make(scope, ident, rule)
        for check in made:
            _keep_strictest(found, check)

    def _make(self, scope: str, ident: str, rule: LimitRule) -> tuple[Check, ...]:
        found: dict[str, Check] = {}
        base = counter_prefix(scope, ident, cluster=self.cluster)
        kind, letter = (WINDOW, "w") if self.sliding else (BUCKET, "b")
        # One counter per scope, identity and kind, whatever its limit: a policy's `limit` or a changed rule then
        # applies to the requests already counted, and two rules on one counter keep the stricter.
        if rule.rpm:
            cap = float(rule.burst or rule.rpm) if kind == BUCKET else float(rule.rpm)
            key = f"{base}rpm.{letter}"
            label = f"requests per min (RPM) of {scope} {ident}"
            _keep_strictest(found, Check(key, kind, rule.rpm, cap, 60_000, 1.0, REQUESTS, label))
        if rule.tpm:
            cap = float(rule.burst_tokens or rule.tpm) if kind == BUCKET else float(rule.tpm)
            key = f"{base}tpm.{letter}"
            label = f"tokens per min (TPM) of {scope} {ident}"
            _keep_strictest(found, Check(key, kind, rule.tpm, cap, 60_000, 0.0, TOKENS, label))
        if rule.concurrency:
            key = f"{base}cc"
            check = Check(key, CONCURRENCY, rule.concurrency, rule.concurrency, self.lease_ms, 1.0,
                          label=f"requests in flight of {scope} {ident}")  # fmt: skip
            _keep_strictest(found, check)
        if rule.budget_usd:
            period, left_ms = self.period(rule.period)
            key = f"{base}usd:{period}"  # one spend per key, team or project and period, whichever rule caps it
            label = f"budget of {scope} {ident} ({rule.period})"
            check = Check(key, BUDGET, rule.budget_usd, rule.budget_usd, left_ms, 0.0, label=label,
                          soft=rule.budget_usd * self.soft)  # fmt: skip
            _keep_strictest(found, check)
        return tuple(found.values())

    def period(self, period: str) -> tuple[str, int]:
        """The period's id and the milliseconds to its end (UTC), recomputed at most once a second."""
        now = self.clock()
        stamp, cache = self._periods
        if stamp < 0 or now - stamp >= 1.0:
            today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            month = today.replace(day=1)
            next_day = today.timestamp() + 86_400
            next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1).timestamp()
            cache = {
                "day": (today.strftime("%Y-%m-%d"), int((next_day - now) * 1000)),
                "month": (month.strftime("%Y-%m"), int((next_month - now) * 1000)),
            }
            self._periods = (now, cache)
        return cache[period]

    async def close(self) -> None:
        await self.failover.close()


class OwnLimits(Protocol):
    """A caller's own limits (gateway.context.Principal: a virtual key's)."""

    @property
    def rpm(self) -> int: ...
    @property
    def tpm(self) -> int: ...
    @property
    def budget_usd(self) -> float: ...
    @property
    def budget_period(self) -> str: ...


class LimitOverride(Protocol):
    """A policy's `limit` action (gateway.policy.model.Limit): None leaves the key's own value."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def budget_usd(self) -> float | None: ...
    @property
    def budget_period(self) -> str | None: ...


def own_rule(principal: OwnLimits, override: LimitOverride | None = None) -> LimitRule | None:
    """A virtual key's own rpm, tpm and budget as a rule of scope key; None if it has none. A policy's `limit`
    action replaces them field by field for the requests it matches (same counters: the key's)."""
    rpm, tpm, budget, period = principal.rpm, principal.tpm, principal.budget_usd, principal.budget_period
    if override is not None:
        rpm = override.rpm if override.rpm is not None else rpm
        tpm = override.tpm if override.tpm is not None else tpm
        budget = override.budget_usd if override.budget_usd is not None else budget
        period = override.budget_period or period
    if not (rpm or tpm or budget):
        return None
    return LimitRule(scope="key", rpm=rpm, tpm=tpm, budget_usd=budget, period="day" if period == "day" else "month")


def _keep_strictest(found: dict[str, Check], check: Check) -> None:
    """Two rules on one counter (a config budget and the key's own): one reservation, against the lower cap."""
    current = found.get(check.key)
    if current is None or check.limit < current.limit:
        found[check.key] = check
