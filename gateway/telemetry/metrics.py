"""Prometheus metrics. Labels are low-cardinality only: endpoint, model group, provider, status class, filter,
error domain and type — never a key, a user or a prompt. Children are bound once and cached, since a labelled
lookup costs several times a bound call.

With several workers, `gateway serve` sets PROMETHEUS_MULTIPROC_DIR before they start and /metrics aggregates
every worker's files (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.context import RequestContext

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        route = ["endpoint", "model", "provider"]
        self.requests = Counter("gateway_requests", "Requests answered.", [*route, "status_class"], registry=r)
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds", "Total time of a request.", route, buckets=LATENCY_BUCKETS, registry=r
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds", "Time spent waiting on the upstream.", route, registry=r,
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.overhead_seconds = Histogram(
            "gateway_overhead_seconds", "The gateway's own time per request (total minus upstream).", ["endpoint"],
            buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft_seconds = Histogram(
            "gateway_time_to_first_token_seconds", "Time to the first content of a stream.", route, registry=r,
            buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.tokens = Counter("gateway_tokens", "Tokens, by kind.", [*route, "kind"], registry=r)
        self.cost = Counter("gateway_cost_usd", "Cost in US dollars.", route, registry=r)
        self.errors = Counter(
            "gateway_errors", "Errors by fault domain (client, provider, gateway) and type.", ["domain", "type"],
            registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "Requests being served.", registry=r, multiprocess_mode="livesum"
        )
        self.filter_seconds = Histogram(
            "gateway_filter_duration_seconds", "Time in each pipeline stage (route: without the upstream).",
            ["filter"], buckets=OVERHEAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "gateway_telemetry_queue_depth", "Records waiting to be written.", registry=r, multiprocess_mode="livesum"
        )
        self.queue_dropped = Counter(
            "gateway_telemetry_dropped", "Records dropped because the telemetry queue was full.", registry=r
        )
        self.records_written = Counter("gateway_telemetry_written", "Records written, by sink.", ["sink"], registry=r)
        self.sink_errors = Counter("gateway_telemetry_sink_errors", "Failed writes, by sink.", ["sink"], registry=r)
        self.token_fallbacks = Counter(
            "gateway_token_count_fallbacks", "Token counts made without the model's exact encoding.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.usage_counted = Counter(
            "gateway_usage_counted", "Requests whose usage the gateway counted itself (no usage upstream).",
            registry=r,
        )  # fmt: skip
        self.events = Counter("gateway_events", "Gateway events (breaker, fallback, retry budget...).", ["type"],
                              registry=r)  # fmt: skip
        self.attempts = Counter(
            "gateway_upstream_attempts", "Upstream attempts by outcome (ok, retry, failed).", ["provider", "outcome"],
            registry=r,
        )  # fmt: skip
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._status: dict[tuple[str, str, str, int], Any] = {}
        self._filters: dict[str, Any] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._overhead: dict[str, Any] = {}

    def _route(self, endpoint: str, model: str, provider: str) -> tuple[Any, ...]:
        key = (endpoint, model, provider)
        children = self._children.get(key)
        if children is None:
            children = (
                self.request_seconds.labels(*key),
                self.upstream_seconds.labels(*key),
                self.ttft_seconds.labels(*key),
                self.tokens.labels(*key, "prompt"),
                self.tokens.labels(*key, "completion"),
                self.tokens.labels(*key, "cached"),
                self.tokens.labels(*key, "reasoning"),
                self.cost.labels(*key),
            )
            self._children[key] = children
        return children

    def observe(self, ctx: RequestContext) -> None:
        """Everything a finished request contributes. Runs once per request, so it stays lean."""
        model = ctx.model if ctx.group is not None else "unknown"
        provider = ctx.provider or "none"
        key = (ctx.endpoint, model, provider)
        total, upstream, ttft, prompt, completion, cached, reasoning, cost = self._route(*key)
        status_class = ctx.status // 100
        counter = self._status.get((*key, status_class))
        if counter is None:
            counter = self._status[(*key, status_class)] = self.requests.labels(*key, f"{status_class}xx")
        counter.inc()
        total.observe(ctx.total_ns / 1e9)
        upstream_ns = ctx.upstream_ns
        if upstream_ns:
            upstream.observe(upstream_ns / 1e9)
        if ctx.first_token_ns:
            ttft.observe((ctx.first_token_ns - ctx.started_ns) / 1e9)
        overhead = self._overhead.get(ctx.endpoint)
        if overhead is None:
            overhead = self._overhead[ctx.endpoint] = self.overhead_seconds.labels(ctx.endpoint)
        overhead.observe(ctx.overhead_ns() / 1e9)
        usage = ctx.usage
        if usage is not None:
            prompt.inc(usage.prompt_tokens)
            completion.inc(usage.completion_tokens)
            if usage.cached_tokens:
                cached.inc(usage.cached_tokens)
            if usage.reasoning_tokens:
                reasoning.inc(usage.reasoning_tokens)
        if ctx.cost_usd:
            cost.inc(ctx.cost_usd)
        for span in ctx.spans:
            child = self._filters.get(span.name)
            if child is None:
                child = self._filters[span.name] = self.filter_seconds.labels(span.name)
            duration = span.duration_ns
            if span.name == "route":
                duration -= upstream_ns
            child.observe(max(0, duration) / 1e9)
        error = ctx.error
        if error is not None:
            self.error(error.domain, error.error_type)

    def error(self, domain: str, error_type: str) -> None:
        child = self._errors.get((domain, error_type))
        if child is None:
            child = self._errors[(domain, error_type)] = self.errors.labels(domain, error_type)
        child.inc()

    def render(self) -> tuple[bytes, str]:
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
