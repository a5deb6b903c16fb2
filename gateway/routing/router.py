"""The router: model name -> group -> deployment, with retries, fallbacks and breakers.

For one request: the group's healthy deployments (not drained, breaker closed or probing, under capacity, within
the request's constraints) are ranked by the group's strategy; an attempt that fails with a retryable error
(connection, timeout before the first byte, 429, 500, 502, 503, 504) is retried after a backoff with full jitter
that honours Retry-After, preferring a deployment not yet tried, while the deployment's retry budget allows.
When the group is exhausted, its fallback chain is tried in order. A prompt longer than every deployment's
context window goes to the group's context_window_fallback before any call; a refusal on policy grounds goes
to its content_policy_fallback. Nothing is retried once a stream has started: attempts happen before the reply
exists. Nothing is retried either once the request is cancelled (its client left, gateway/api/watch.py): the
cancellation ends the attempt, the backoff or the fallback chain where it is, and closes the upstream request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config import Deployment, ModelGroup, RoutingConfig
from gateway.context import RequestContext, RouteConstraints
from gateway.errors import ModelNotFound, NoDeploymentAvailable, UpstreamError
from gateway.reply import Reply
from gateway.routing import strategies
from gateway.routing.health import DeploymentHealth, HealthRegistry
from gateway.routing.retry import backoff_delay, retry_after_seconds

if TYPE_CHECKING:
    from gateway.providers.base import Provider
    from gateway.telemetry.events import Events
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.pricing import PriceTable
    from gateway.telemetry.tokens import TokenCounter

Pick = Callable[[Sequence[DeploymentHealth], RequestContext], tuple[DeploymentHealth, str]]
CONTEXT_LENGTH_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})


@dataclass(slots=True, eq=False)
class Target:
    """A model group as the router tries it, made once per configured model name (per request only for a name
    that a wildcard matches): its deployments' health objects found, its strategy chosen, its fallbacks known.
    Nothing of it changes per request: health, breakers and drains live in the DeploymentHealth objects."""

    name: str
    group: ModelGroup
    healths: tuple[DeploymentHealth, ...]
    pick: Pick
    # Each health's deployment as this group lists it: a deployment two groups list shares one health (one
    # upstream target), but its price, region, tags and timeouts are each group's own.
    own: dict[str, Deployment]
    chain: tuple[Target, ...] = ()  # this group, then its fallbacks that the router knows, in order


class Router:
    def __init__(
        self,
        *,
        models: dict[str, ModelGroup],
        providers: dict[str, Provider],
        config: RoutingConfig,
        health: HealthRegistry,
        events: Events,
        metrics: Metrics,
        prices: PriceTable,
        tokens: TokenCounter,
    ) -> None:
        self.models = models
        self.providers = providers
        self.config = config
        self.health = health
        self.events = events
        self.metrics = metrics
        # gateway_upstream_attempts' children by (provider, outcome), bound once and batched (Metrics.counter).
        self._attempts: dict[tuple[str, str], Any] = {}
        self.tokens = tokens
        self.wildcards = sorted(((n[:-1], g) for n, g in models.items() if n.endswith("*")), key=lambda x: -len(x[0]))
        self.strategies: dict[str, Pick] = {
            "weighted": strategies.weighted,
            "round-robin": strategies.round_robin,
            "least-in-flight": strategies.least_in_flight,
            "lowest-latency": strategies.lowest_latency,
            "lowest-cost": strategies.lowest_cost(prices),
        }
        # Every configured group's Target, made once: a request finds its route with one lookup by model name.
        self.targets = {name: self._target(name, group) for name, group in models.items()}
        for target in self.targets.values():
            target.chain = self._chain(target)

    def _target(self, name: str, group: ModelGroup) -> Target:
        healths = tuple(self.health.get(d) for d in group.deployments)
        own = {health.id: d for health, d in zip(healths, group.deployments, strict=True)}
        return Target(name, group, healths, self.strategies[group.strategy or self.config.strategy], own)

    def _chain(self, target: Target) -> tuple[Target, ...]:
        return (target, *(self.targets[name] for name in target.group.fallbacks if name in self.targets))

    def target(self, name: str) -> Target | None:
        """The route of a model name: its configured group's, or one made for a name that a wildcard matches."""
        target = self.targets.get(name)
        if target is not None or not self.wildcards:
            return target
        for prefix, pattern in self.wildcards:
            if name.startswith(prefix) and len(name) > len(prefix):
                rest = name[len(prefix) :]
                deployments = [_with_model(d, rest) for d in pattern.deployments]
                group = ModelGroup(deployments=deployments, strategy=pattern.strategy, fallbacks=pattern.fallbacks)
                target = self._target(name, group)
                target.chain = self._chain(target)
                return target
        return None

    def resolve(self, name: str) -> ModelGroup | None:
        target = self.target(name)
        return target.group if target is not None else None

    async def send(self, ctx: RequestContext) -> Reply:
        target = self.targets.get(ctx.model) or self.target(ctx.model)
        if target is None:
            raise ModelNotFound(
                f"The model `{ctx.model}` does not exist or you do not have access to it.", param="model"
            )
        group = ctx.group = target.group
        chain = target.chain
        if group.context_window_fallback in self.targets and self._too_long(ctx, group):
            chain = (self.targets[group.context_window_fallback], *chain[1:])
            self._fallback(ctx, ctx.model, group.context_window_fallback, "context_window")
        last: UpstreamError | None = None
        position = 0
        while position < len(chain):
            current = chain[position]
            if position:
                await _client_still_there(ctx)
                if chain[position - 1].name != current.name:
                    error = last.error_type if last else "unavailable"
                    self._fallback(ctx, chain[position - 1].name, current.name, error)
            try:
                return await self._send_to_group(ctx, current)
            except UpstreamError as exc:
                last = exc
                special = _special_fallback(exc, current.group)
                if special and special in self.targets and all(special != t.name for t in chain[position + 1 :]):
                    chain = (*chain[: position + 1], self.targets[special], *chain[position + 1 :])
                elif not exc.retryable and not isinstance(exc, NoDeploymentAvailable):
                    raise
            position += 1
        assert last is not None
        raise last

    async def _send_to_group(self, ctx: RequestContext, target: Target) -> Reply:
        pick = target.pick
        constraints = ctx.constraints
        own = target.own
        tried: set[str] | None = None  # the deployments tried, made at the first retry
        retries = 0
        while True:
            now = self.health.clock()
            if constraints is None:
                candidates = [h for h in target.healths if h.available(now)]
            else:
                candidates = [h for h in target.healths if _allowed(own[h.id], constraints) and h.available(now)]
            if not candidates:
                raise NoDeploymentAvailable(
                    f"No deployment of `{ctx.model}` is available (drained, circuit open, over capacity or outside "
                    "the request's constraints)."
                )
            fresh = ([h for h in candidates if h.id not in tried] or candidates) if tried else candidates
            health, reason = pick(fresh, ctx)
            if not health.breaker.allow(now):  # the probe slot went to another request since available()
                continue
            probe = health.breaker.state == "half-open"  # this attempt holds the breaker's one probe slot
            try:
                reply = await self._attempt(ctx, health, own[health.id], now)
            except UpstreamError as exc:
                if tried is None:
                    tried = set()
                tried.add(health.id)
                if exc.retryable:  # a client's bad request says nothing about the deployment's health
                    self.health.failed(health, exc.error_type)
                elif probe:
                    health.breaker.release()
                provider = health.deployment.provider
                if not exc.retryable or retries >= self.config.retries:
                    self._count(provider, "failed")
                    raise
                if not health.budget.withdraw(self.health.clock()):
                    self._count(provider, "failed")
                    self.events.emit("retry_budget_exhausted", deployment=health.deployment.id)
                    raise
                self._count(provider, "retry")
                retries += 1
                delay = backoff_delay(retries, self.config.backoff, retry_after_seconds(exc.headers.get("retry-after")))
                if delay > self.config.backoff.max_s and len(target.healths) == 1:
                    raise  # the upstream asks for a longer wait than we may hold the client: fall back instead
                await asyncio.sleep(min(delay, self.config.backoff.max_s))
                await _client_still_there(ctx)
                continue
            except BaseException:  # cancelled (the client left, the shutdown): no verdict either
                if probe:
                    health.breaker.release()
                raise
            ctx.route_reason = reason
            self._count(health.deployment.provider, "ok")
            return reply

    def _count(self, provider: str, outcome: str) -> None:
        child = self._attempts.get((provider, outcome))
        if child is None:  # added up in plain Python, written to the metric when it is read (Metrics.flush)
            child = self._attempts[provider, outcome] = self.metrics.counter(
                self.metrics.attempts.labels(provider, outcome)
            )
        child.value += 1

    async def _attempt(
        self, ctx: RequestContext, health: DeploymentHealth, deployment: Deployment, now: float
    ) -> Reply:
        ctx.attempts += 1
        ctx.deployment = deployment
        ctx.provider = deployment.provider
        ctx.served_model = ""
        health.budget.deposit()
        health.started(now)
        start = time.perf_counter_ns()
        ctx.upstream_connect = None  # this attempt's, not an earlier one's
        try:
            reply = await self.providers[deployment.provider].send(
                ctx, deployment, deployment.timeouts or self.config.timeouts
            )
        except BaseException:
            health.in_flight -= 1
            ctx.add_span(f"{health.span}:failed", start)
            raise
        # One span per attempt, in the record's spans beside the filters' (for a stream: until its headers).
        ctx.add_span(health.span, start)
        if reply.stream is not None:
            ctx.open_stream = True
        else:
            health.in_flight -= 1
            if ctx.usage is not None:
                health.used_tokens(ctx.usage.total_tokens)
            self.health.succeeded(health, latency_s=ctx.upstream_ns / 1e9)
        # A stream's in-flight count, time to first token and outcome are settled by finished() when it ends.
        return reply

    def finished(self, ctx: RequestContext) -> None:
        """After a stream has ended: the deployment's in-flight count, time to first token, and its outcome."""
        deployment = ctx.deployment
        if deployment is None or not ctx.open_stream:
            return
        ctx.open_stream = False
        health = self.health.get(deployment)
        health.in_flight -= 1
        if ctx.usage is not None:
            health.used_tokens(ctx.usage.total_tokens)
        if isinstance(ctx.error, UpstreamError) and ctx.error.retryable:
            self.health.failed(health, ctx.error.error_type)
        else:
            ttft = (ctx.first_token_ns - ctx.upstream_start_ns) / 1e9 if ctx.first_token_ns else 0.0
            self.health.succeeded(health, ttft_s=ttft)

    def _too_long(self, ctx: RequestContext, group: ModelGroup) -> bool:
        limits = [d.max_input_tokens for d in group.deployments if d.max_input_tokens]
        if not limits:
            return False
        limit = max(limits)
        # Four bytes a token or more for any real text: a body under that bound cannot be too long, and only the
        # rare long prompt pays for an exact count.
        if len(ctx.raw_body) / 4 < limit * 0.5:
            return False
        return self.tokens.count_prompt(ctx.endpoint, group.deployments[0].model, ctx.body) > limit

    def _fallback(self, ctx: RequestContext, source: str, target: str, reason: str) -> None:
        ctx.tags["fallback"] = f"{source}->{target}"
        self.events.emit("fallback_used", model=source, fallback=target, reason=reason)


async def _client_still_there(ctx: RequestContext) -> None:
    """Before a retry or a fallback: a client that has left cancels the request here, not after one more call."""
    if ctx.watch is not None:
        await ctx.watch.confirm()


def _special_fallback(exc: UpstreamError, group: ModelGroup) -> str:
    if exc.code in CONTEXT_LENGTH_CODES:
        return group.context_window_fallback
    if exc.code in CONTENT_POLICY_CODES:
        return group.content_policy_fallback
    return ""


def _allowed(deployment: Deployment, constraints: RouteConstraints | None) -> bool:
    if constraints is None:
        return True
    if constraints.regions and deployment.region not in constraints.regions:
        return False
    if constraints.providers and deployment.provider not in constraints.providers:
        return False
    return not constraints.tags or constraints.tags.issubset(deployment.tags)


def _with_model(deployment: Deployment, model: str) -> Deployment:
    return dataclasses.replace(deployment, model=model if deployment.model == "*" else deployment.model + model)
