"""Components: what the filters are built from, made once at start-up by the runtime (gateway/runtime.py).

A filter's `build` picks what it uses from here and hands it to its constructor, which names each part: no
filter sees the runtime. Frozen: a component is built before the filters and never replaced under them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.cache.service import ResponseCache
    from gateway.config import GatewayConfig, ModelGroup
    from gateway.flags import Features
    from gateway.guardrails.build import CheckEnv
    from gateway.identity.authenticator import Authenticator
    from gateway.policy.registry import PolicyRegistry
    from gateway.routing.router import Router
    from gateway.state.ratelimits import RateLimits
    from gateway.telemetry.events import Events
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.recorder import Recorder
    from gateway.telemetry.tokens import TokenCounter


@dataclass(frozen=True, slots=True)
class Components:
    config: GatewayConfig  # each filter reads its own section
    registry: CollectorRegistry  # the gateway's metrics registry, for a filter's own metrics
    metrics: Metrics  # its batched counters (Metrics.counter), for a filter's counters on the request path
    identity: Authenticator  # keys, virtual keys, JWTs: who is calling
    policies: PolicyRegistry  # the policies in force (hot-reloaded)
    check_env: CheckEnv  # what guardrail checks share: token counting, known abuse prompts
    tokens: TokenCounter
    recorder: Recorder  # prices and the cost of an answer
    events: Events  # gateway events (budget thresholds...)
    features: Features  # per-project flags
    models: Mapping[str, ModelGroup]  # the model groups served (deployments of enabled providers)
    router: Router
    rate_limits: RateLimits | None  # the counters, when the pipeline limits anything (shared with /admin/usage)
    cache: ResponseCache | None = None  # the response cache, when the pipeline names it (purged by /admin/cache)
