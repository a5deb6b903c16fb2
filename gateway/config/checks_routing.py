"""The checks of routing's and the limits' settings: the parts of `gateway check` that bound retries, the events
webhook, the breakers and the rate-limit rules."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import BreakerConfig, GatewayConfig


def check_routing(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    if config.routing.retries < 0:
        problems.append(("routing.retries", "must not be negative"))
    hook = config.routing.events_webhook
    if hook.url and not hook.url.startswith(("http://", "https://")):
        problems.append(("routing.events_webhook.url", "must be an http:// or https:// URL"))
    if min(hook.batch_size, hook.flush_interval_ms, hook.max_backoff_s, hook.timeout_s) <= 0:
        problems.append(
            ("routing.events_webhook", "batch_size, flush_interval_ms, max_backoff_s, timeout_s must be positive")
        )
    if hook.spool_max_mb < 0:
        problems.append(("routing.events_webhook.spool_max_mb", "must not be negative"))
    if not 0 <= config.routing.retry_budget.ratio <= 1:
        problems.append(("routing.retry_budget.ratio", "must be between 0 and 1"))
    _check_breaker(config.routing.breaker, problems)


def _check_breaker(breaker: BreakerConfig, problems: list[tuple[str, str]]) -> None:
    # Each of these taken as it was had been a fault of its own: a sync interval of 0, negative or nan runs the
    # sync in a busy loop against Redis (and its TTLs of 5 intervals never expire); a max_cooldown_s of 0 or less
    # opens a breaker for no time and gives the reset mark a TTL that never expires. (A cooldown_s above
    # max_cooldown_s is capped to it, as documented.)
    if not 0 < breaker.error_rate <= 1:
        problems.append(("routing.breaker.error_rate", "must be in (0, 1]"))
    for name in ("sync_interval_s", "cooldown_s", "max_cooldown_s", "window_s"):
        value = getattr(breaker, name)
        if not (math.isfinite(value) and value > 0):
            problems.append((f"routing.breaker.{name}", "must be a positive number of seconds"))
    for name in ("consecutive_failures", "min_requests"):
        if getattr(breaker, name) < 1:
            problems.append((f"routing.breaker.{name}", "must be at least 1"))


def check_limits(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    import ipaddress

    limits = config.limits
    if not 0 < limits.soft_pct <= 100:
        problems.append(("limits.soft_pct", "must be in (0, 100]"))
    if limits.default_completion_tokens < 0:
        problems.append(("limits.default_completion_tokens", "must not be negative"))
    for i, rule in enumerate(limits.rules):
        path = f"limits.rules[{i}]"
        if rule.budget_usd and rule.scope not in ("key", "team", "project"):
            problems.append((f"{path}.budget_usd", "budgets apply to the key, team and project scopes only"))
        if min(rule.rpm, rule.tpm, rule.burst, rule.burst_tokens, rule.concurrency) < 0 or rule.budget_usd < 0:
            problems.append((path, "limits must not be negative"))
        if not (rule.rpm or rule.tpm or rule.concurrency or rule.budget_usd):
            problems.append((path, "sets no limit (rpm, tpm, concurrency or budget_usd)"))
    for i, cidr in enumerate(config.server.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append((f"server.trusted_proxies[{i}]", f"not an address or CIDR: {cidr!r}"))
