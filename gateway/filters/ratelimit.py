"""ratelimit: requests and tokens per minute, requests in flight, and spend per day or month — checked and
reserved for every applicable limit at once before the upstream call (one Redis round trip, or none on the memory
backend), settled with the real usage and cost after it, released when the request fails.

The rules come from `limits.rules` and from the caller's own Principal (a virtual key's rpm, tpm and budget). The
token reservation is the prompt (counted only when a TPM limit or a budget applies) plus max_tokens or
`limits.default_completion_tokens`; the budget reservation is that many tokens at the model's dearest deployment.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from gateway.config import LimitRule
from gateway.context import ANONYMOUS, Principal, RequestContext
from gateway.errors import BudgetExceeded, ClientClosed, RateLimited, ServerShuttingDown
from gateway.limits.clientip import ClientAddress
from gateway.limits.failover import Failover
from gateway.limits.model import (
    BUCKET,
    BUDGET,
    CONCURRENCY,
    REQUESTS,
    TOKENS,
    WINDOW,
    Check,
    Limiter,
    Outcome,
    Reservation,
)
from gateway.pipeline import Reply

if TYPE_CHECKING:
    from gateway.policy.model import Limit as PolicyLimit
    from gateway.runtime import Gateway

# One hash tag for every counter: a request's counters (its key, team, project, model, global...) must share a
# slot for one script to touch them all on Redis Cluster. The price is that one shard holds every limit; sharding
# by tenant instead (a tag per project) would scale out but could not include global or model-wide limits.
PREFIX = "{gw:rl}:"


class RateLimitFilter:
    name = "ratelimit"

    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config.limits
        self.config = config
        self.sliding = config.algorithm == "sliding-window"
        self.rules = list(config.rules)
        self.has_ip_rules = any(r.scope == "ip" for r in self.rules)
        self.tokens = gateway.recorder.tokens
        self.recorder = gateway.recorder
        self.events = gateway.events
        self.models = gateway.models
        self.soft = config.soft_pct / 100
        self.client_address = ClientAddress(gateway.config.server.trusted_proxies)
        # A slot held by a process that died comes back when its lease lapses: longer than any request may take.
        self.lease_ms = int(gateway.config.routing.timeouts.total_s * 1000) + 60_000
        self._prices: dict[str, tuple[float, float] | None] = {}
        self._periods: tuple[float, dict[str, tuple[str, int]]] = (0.0, {})
        registry = gateway.metrics.registry
        errors = Counter(
            "gateway_ratelimit_backend_errors", "Failed calls to the rate-limit backend (Redis).", registry=registry
        )
        degraded = Gauge(
            "gateway_ratelimit_degraded", "1 while Redis is unreachable and limits are per process (or refused).",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        rejected = Counter(
            "gateway_ratelimit_rejected", "Requests refused, by limit kind.", ["kind"], registry=registry
        )
        self._rejected = {kind: rejected.labels(kind) for kind in ("rate", "tokens", "concurrency", "budget")}
        primary: Limiter | None = None
        if config.backend != "memory":
            from gateway.limits.redis import RedisLimiter

            primary = RedisLimiter(config.backend, timeout_s=config.timeout_ms / 1000, on_error=errors.inc)
        self.limits = Failover(
            primary,
            fail_open=config.fail == "open",
            retry_interval_s=config.retry_interval_s,
            errors=errors,
            degraded=degraded,
        )

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        checks = self._checks(ctx)
        if not checks:
            return None
        tokens = cost = 0.0
        if any(c.header == TOKENS or c.kind == BUDGET for c in checks):
            tokens, cost = self._estimate(ctx)
            for check in checks:
                if check.header == TOKENS:
                    check.cost = tokens
                elif check.kind == BUDGET:
                    check.cost = cost
            self._refuse_oversized(ctx, checks)
        outcome, limiter = await self.limits.reserve(checks)
        if not outcome.ok:
            self._refuse(ctx, checks[outcome.failed], outcome)
        ctx.limit_reservation = Reservation(limiter, checks)
        ctx.limit_headers = _headers(checks, outcome)
        for i in outcome.soft_crossed:
            check = checks[i]
            self.events.emit("budget_soft_limit", limit=check.label, budget_usd=check.limit, threshold_usd=check.soft)
        return None

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        reservation = ctx.limit_reservation
        if reservation is None:
            return None
        ctx.limit_reservation = None
        limiter, checks = reservation.limiter, reservation.checks
        usage = ctx.usage
        # Nothing served (upstream error, a later filter refused): give back everything that was taken. A request
        # stopped after it reached the upstream (its client left, the shutdown) keeps its estimate: the upstream
        # may well bill it, and leaving must not be a way around a limit.
        error = ctx.error
        release = usage is None and error is not None
        if release and ctx.upstream_start_ns and isinstance(error, ClientClosed | ServerShuttingDown):
            release = False
        actual_cost: float | None = None
        if usage is not None:
            actual_cost = ctx.cost_usd if ctx.cost_usd is not None else self.recorder.cost(ctx, usage)
        items: list[tuple[Check, float]] = []
        for check in checks:
            if check.kind == CONCURRENCY:
                items.append((check, -1.0))
            elif release:
                items.append((check, -check.cost))
            elif usage is None:
                continue  # served without usage (counted later, off the request path): the estimate stands
            elif check.header == TOKENS:
                items.append((check, usage.total_tokens - check.cost))
            elif check.kind == BUDGET and actual_cost is not None:
                items.append((check, actual_cost - check.cost))
        if items:
            limiter.settle(items)
        return None

    async def close(self) -> None:
        await self.limits.close()

    # -- building the checks --------------------------------------------------------------------------------------

    def _checks(self, ctx: RequestContext) -> list[Check]:
        principal = ctx.principal
        anonymous = principal is ANONYMOUS or principal.source == "anonymous"
        found: dict[str, Check] = {}
        ip = ""
        if self.has_ip_rules and anonymous:
            ip = self.client_address.of(ctx.client_ip, ctx.headers)
        for rule in self.rules:
            ident = _identity(rule, ctx, principal, anonymous, ip)
            # A key is matched by its id or its name; its counters are the id's, whichever the rule names.
            match = rule.match
            if ident and (not match or match == ident or (rule.scope == "key" and match == principal.name)):
                self._add(found, rule.scope, ident, rule)
        if not anonymous:
            own = own_rule(principal, ctx.policy.limit if ctx.policy is not None else None)
            if own is not None:
                self._add(found, "key", principal.key_id or principal.name, own)
        return list(found.values())

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
            self._add(found, scope, ident, rule)
            if rule.budget_usd:
                periods[f"{PREFIX}{scope}:{ident}:usd:{self._period(rule.period)[0]}"] = rule.period
        checks = list(found.values())
        taken = await self.limits.peek(checks) if checks else []
        return [(check, periods.get(check.key, ""), used) for check, used in zip(checks, taken, strict=True)]

    def _add(self, found: dict[str, Check], scope: str, ident: str, rule: LimitRule) -> None:
        base = f"{PREFIX}{scope}:{ident}:"
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
            period, left_ms = self._period(rule.period)
            key = f"{base}usd:{period}"  # one spend per key, team or project and period, whichever rule caps it
            label = f"budget of {scope} {ident} ({rule.period})"
            check = Check(key, BUDGET, rule.budget_usd, rule.budget_usd, left_ms, 0.0, label=label,
                          soft=rule.budget_usd * self.soft)  # fmt: skip
            _keep_strictest(found, check)

    def _period(self, period: str) -> tuple[str, int]:
        """The period's id and the milliseconds to its end (UTC), recomputed at most once a second."""
        now = time.time()
        stamp, cache = self._periods
        if now - stamp >= 1.0:
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

    def _estimate(self, ctx: RequestContext) -> tuple[float, float]:
        """(tokens, US dollars) this request may use: prompt plus the completion it may ask for."""
        body = ctx.body
        prompt = self.tokens.count_prompt(ctx.endpoint, ctx.model, body)
        completion = 0
        if ctx.endpoint != "embeddings":
            asked = body.get("max_completion_tokens") or body.get("max_tokens")
            completion = asked if isinstance(asked, int) and asked > 0 else self.config.default_completion_tokens
        price = self._price(ctx.model)
        cost = (prompt * price[0] + completion * price[1]) / 1e6 if price else 0.0
        return float(prompt + completion), cost

    def _price(self, model: str) -> tuple[float, float] | None:
        """The dearest input and output prices among the model's deployments: the router has not chosen yet."""
        if model in self._prices:
            return self._prices[model]
        group = self.models.get(model)
        best: tuple[float, float] | None = None
        for deployment in group.deployments if group else ():
            price = deployment.price or self.recorder.prices.price_for(deployment.model)
            if price is not None:
                best = (max(price.input, best[0] if best else 0.0), max(price.output, best[1] if best else 0.0))
        if len(self._prices) < 10_000:
            self._prices[model] = best
        return best

    # -- refusals -------------------------------------------------------------------------------------------------

    def _refuse_oversized(self, ctx: RequestContext, checks: list[Check]) -> None:
        """A request larger than a limit's whole capacity can never pass: say so instead of asking to retry."""
        for check in checks:
            if check.cost > check.capacity and (check.header == TOKENS or check.kind == BUDGET):
                kind = "budget" if check.kind == BUDGET else "tokens"
                self._rejected[kind].inc()
                error_type = BudgetExceeded if check.kind == BUDGET else RateLimited
                error = error_type(
                    f"Request too large for the {check.label}: limit {_number(check.capacity)}, "
                    f"requested {_number(check.cost)}. Lower max_tokens or the prompt."
                )
                error.headers["x-should-retry"] = "false"
                raise error

    def _refuse(self, ctx: RequestContext, check: Check, outcome: Outcome) -> None:
        retry_s = outcome.retry_ms / 1000
        if check.kind == BUDGET:
            self._rejected["budget"].inc()
            error: RateLimited = BudgetExceeded(
                f"Budget exceeded: the {check.label} of ${check.limit:g} is spent.", retry_after_s=retry_s
            )
            # Waiting a second will not help: stop the SDK's automatic retries.
            error.headers["x-should-retry"] = "false"
        else:
            kind = "tokens" if check.header == TOKENS else "concurrency" if check.kind == CONCURRENCY else "rate"
            self._rejected[kind].inc()
            error = RateLimited(
                f"Rate limit reached for {check.label}: limit {_number(check.limit)}, requested "
                f"{_number(check.cost)}. Please try again in {format_reset(outcome.retry_ms)}.",
                retry_after_s=retry_s,
            )
            error.headers["retry-after-ms"] = str(max(1, math.ceil(outcome.retry_ms)))  # the SDK prefers it
        if check.header:
            what = "requests" if check.header == REQUESTS else "tokens"
            ctx.limit_headers = [
                (f"x-ratelimit-limit-{what}".encode(), b"%d" % check.limit),
                (f"x-ratelimit-remaining-{what}".encode(), b"0"),
                (f"x-ratelimit-reset-{what}".encode(), format_reset(outcome.retry_ms).encode()),
            ]
        raise error


def own_rule(principal: Principal, override: PolicyLimit | None = None) -> LimitRule | None:
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


def _identity(rule: LimitRule, ctx: RequestContext, principal: Principal, anonymous: bool, ip: str) -> str:
    """Whose counter a rule uses for this request; empty: the rule does not apply."""
    scope = rule.scope
    if scope == "model":
        return ctx.model
    if scope == "global":
        return "*"
    if scope == "ip":
        return ip  # unauthenticated traffic only
    if anonymous and scope == "key":
        return ""
    if scope == "key":
        return principal.key_id or principal.name
    if scope == "project":
        return principal.project
    return principal.team if scope == "team" else principal.user


def _keep_strictest(found: dict[str, Check], check: Check) -> None:
    """Two rules on one counter (a config budget and the key's own): one reservation, against the lower cap."""
    current = found.get(check.key)
    if current is None or check.limit < current.limit:
        found[check.key] = check


def _headers(checks: list[Check], outcome: Outcome) -> list[tuple[bytes, bytes]] | None:
    """OpenAI's x-ratelimit-* triples, each from the tightest limit of its kind."""
    tightest: dict[int, int] = {}
    for i, check in enumerate(checks):
        if check.header and (
            check.header not in tightest or outcome.remaining[i] < outcome.remaining[tightest[check.header]]
        ):
            tightest[check.header] = i
    if not tightest:
        return None
    headers: list[tuple[bytes, bytes]] = []
    for header, i in sorted(tightest.items()):
        what = "requests" if header == REQUESTS else "tokens"
        headers.append((f"x-ratelimit-limit-{what}".encode(), b"%d" % checks[i].limit))
        headers.append((f"x-ratelimit-remaining-{what}".encode(), b"%d" % max(0, math.floor(outcome.remaining[i]))))
        headers.append((f"x-ratelimit-reset-{what}".encode(), format_reset(outcome.reset_ms[i]).encode()))
    return headers


def format_reset(ms: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-*: 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{max(0, math.ceil(ms))}ms"
    seconds = math.ceil(ms) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def _number(value: float) -> str:
    return f"{value:.6g}" if value != int(value) else str(int(value))
