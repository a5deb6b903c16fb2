"""ratelimit: requests and tokens per minute, requests in flight, and spend per day or month — checked and
reserved for every applicable limit at once before the upstream call (one Redis round trip, or none on the memory
backend), settled with the real usage and cost after it, released when the request fails.

The rules come from `limits.rules` and from the caller's own Principal (a virtual key's rpm, tpm and budget). The
token reservation is the prompt (counted only when a TPM limit or a budget applies) plus max_tokens or
`limits.default_completion_tokens`; the budget reservation is that many tokens at the model's dearest deployment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from gateway.context import ANONYMOUS, Principal, RequestContext, Usage
from gateway.errors import BudgetExceeded, ClientClosed, RateLimited, ServerShuttingDown
from gateway.filters.base import Stage
from gateway.identity.client_address import ClientAddress
from gateway.reply import Reply
from gateway.state.limiter import BUDGET, CONCURRENCY, REQUESTS, TOKENS, Check, Outcome, Reservation
from gateway.state.ratelimits import PREFIX, RateLimits, own_rule

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.config import LimitRule, ModelGroup
    from gateway.telemetry.events import Events
    from gateway.telemetry.pricing import PriceTable
    from gateway.telemetry.tokens import TokenCounter

__all__ = ["PREFIX", "RateLimitFilter", "format_reset", "own_rule"]


class RateLimitFilter(Stage):
    name = "ratelimit"
    after = ("policy",)
    order_note = "so that its `limit` actions apply"

    def __init__(
        self,
        limits: RateLimits,
        *,
        tokens: TokenCounter,
        prices: PriceTable,
        cost: Callable[[RequestContext, Usage], float | None],
        models: Mapping[str, ModelGroup],
        events: Events,
        default_completion_tokens: int,
        trusted_proxies: list[str],
        registry: CollectorRegistry,
        count_hit_tokens: bool = False,
    ) -> None:
        self.limits = limits
        self.tokens = tokens
        self.prices = prices
        self.cost = cost  # of a served answer, at the deployment that served it
        self.models = models
        self.events = events
        self.default_completion_tokens = default_completion_tokens
        self.count_hit_tokens = count_hit_tokens  # a cache hit's tokens count against TPM (no upstream spent them)
        self.client_address = ClientAddress(trusted_proxies)
        self._prices: dict[str, tuple[float, float] | None] = {}
        rejected = Counter(
            "gateway_ratelimit_rejected", "Requests refused, by limit kind.", ["kind"], registry=registry
        )
        self._rejected = {kind: rejected.labels(kind) for kind in ("rate", "tokens", "concurrency", "budget")}

    @classmethod
    def build(cls, components: Components) -> RateLimitFilter:
        config = components.config
        # Built by the runtime whenever the pipeline names this filter (gateway/runtime.py).
        assert components.rate_limits is not None
        return cls(
            components.rate_limits,
            tokens=components.tokens,
            prices=components.recorder.prices,
            cost=components.recorder.cost,
            models=components.models,
            events=components.events,
            default_completion_tokens=config.limits.default_completion_tokens,
            trusted_proxies=config.server.trusted_proxies,
            registry=components.registry,
            count_hit_tokens=config.cache.count_hit_tokens,
        )

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        checks = self._checks(ctx)
        if not checks:
            return None
        # The checks are this request's own list (shared Check objects in it): those that take tokens or dollars
        # are replaced by copies with this request's estimate, made once.
        estimate: tuple[float, float] | None = None
        for i, check in enumerate(checks):
            if check.header == TOKENS or check.kind == BUDGET:
                if estimate is None:
                    estimate = self._estimate(ctx)
                checks[i] = check.taking(estimate[0] if check.header == TOKENS else estimate[1])
        if estimate is not None:
            self._refuse_oversized(ctx, checks)
        outcome, limiter = await self.limits.reserve(checks)
        if not outcome.ok:
            self._refuse(ctx, checks[outcome.failed], outcome)
        ctx.limit_reservation = Reservation(limiter, checks, outcome.at_ms)
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
            actual_cost = ctx.cost_usd
            if actual_cost is None:  # computed once: the record reads it (Recorder.finish)
                actual_cost = ctx.cost_usd = self.cost(ctx, usage)
        items: list[tuple[Check, float]] = []
        for check in checks:
            if check.kind == CONCURRENCY:
                items.append((reservation.release(check), -1.0))
            elif release:
                items.append((check, -check.cost))
            elif usage is None:
                continue  # served without usage (counted later, off the request path): the estimate stands
            elif check.header == TOKENS:
                spent = usage.total_tokens
                if ctx.cache is not None and ctx.cache.hit and not self.count_hit_tokens:
                    spent = 0  # a hit counts as a request, its tokens were spent by the request it repeats
                items.append((check, spent - check.cost))
            elif check.kind == BUDGET and actual_cost is not None:
                items.append((check, actual_cost - check.cost))
        if items:
            limiter.settle(items)
        return None

    # -- building the checks --------------------------------------------------------------------------------------

    def _checks(self, ctx: RequestContext) -> list[Check]:
        principal = ctx.principal
        anonymous = principal is ANONYMOUS or principal.source == "anonymous"
        limits = self.limits
        found: dict[str, Check] = {}
        ip = ""
        if limits.has_ip_rules and anonymous:
            ip = self.client_address.of(ctx.client_ip, ctx.headers)
        for rule in limits.rules:
            ident = _identity(rule, ctx, principal, anonymous, ip)
            # A key is matched by its id or its name; its counters are the id's, whichever the rule names.
            match = rule.match
            if ident and (not match or match == ident or (rule.scope == "key" and match == principal.name)):
                limits.add(found, rule.scope, ident, rule)
        if not anonymous:
            own = own_rule(principal, ctx.policy.limit if ctx.policy is not None else None)
            if own is not None:
                limits.add(found, "key", principal.key_id or principal.name, own)
        return list(found.values())

    def _estimate(self, ctx: RequestContext) -> tuple[float, float]:
        """(tokens, US dollars) this request may use: prompt plus the completion it may ask for."""
        body = ctx.body
        prompt = self.tokens.count_prompt(ctx.endpoint, ctx.model, body)
        completion = 0
        if ctx.endpoint != "embeddings":
            asked = body.get("max_completion_tokens") or body.get("max_tokens")
            completion = asked if isinstance(asked, int) and asked > 0 else self.default_completion_tokens
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
            price = deployment.price or self.prices.price_for(deployment.model)
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


# The names of each x-ratelimit-* triple: limit, remaining, reset.
_HEADER_NAMES = {
    kind: tuple(f"x-ratelimit-{field}-{what}".encode() for field in ("limit", "remaining", "reset"))
    for kind, what in ((REQUESTS, "requests"), (TOKENS, "tokens"))
}


def _headers(checks: list[Check], outcome: Outcome) -> list[tuple[bytes, bytes]] | None:
    """OpenAI's x-ratelimit-* triples, each from the tightest limit of its kind."""
    tightest: dict[int, int] = {}
    remaining = outcome.remaining
    for i, check in enumerate(checks):
        header = check.header
        if header and (header not in tightest or remaining[i] < remaining[tightest[header]]):
            tightest[header] = i
    if not tightest:
        return None
    headers: list[tuple[bytes, bytes]] = []
    for header in sorted(tightest):
        i = tightest[header]
        limit, left, reset = _HEADER_NAMES[header]
        left_n = math.floor(remaining[i])  # max(0, ...) is a call with keyword parsing in 3.11: compared instead
        headers += (
            (limit, b"%d" % checks[i].limit),
            (left, b"%d" % left_n if left_n > 0 else b"0"),
            (reset, _reset_bytes(math.ceil(outcome.reset_ms[i]))),
        )
    return headers


@functools.lru_cache(maxsize=4096)
def _reset_bytes(ms: int) -> bytes:
    """format_reset of a whole number of milliseconds, encoded: the same few values come back request after
    request (a bucket far from empty refills in the same 1 or 2 ms), and formatting one costs more than a lookup."""
    return format_reset(ms).encode()


def format_reset(ms: float) -> str:
    """A duration as OpenAI writes it in x-ratelimit-reset-*: 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    ms = math.ceil(ms)  # in whole milliseconds first: 999.2 is 1s, as 1000 is
    if ms < 1000:
        return f"{max(0, ms)}ms"
    seconds = ms / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def _number(value: float) -> str:
    return f"{value:.6g}" if value != int(value) else str(int(value))
