"""Prometheus metrics. Labels are low-cardinality only: endpoint, model group, provider, status class, filter,
error domain and type — never a key, a user or a prompt. Children are bound once and cached, since a labelled
lookup costs several times a bound call.

With several workers, `gateway serve` sets PROMETHEUS_MULTIPROC_DIR before they start and /metrics aggregates
every worker's files (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_right
from collections.abc import Callable
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
# A flush at least every this many requests: observations wait in lists for no more than this, and a flush (a
# sort of each list, a few µs per label set) holds the event loop for a few hundred µs at most, whatever the rate
# and however long the telemetry writer sleeps.
FLUSH_EVERY = 256
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Histogram:
    """A histogram child's observations since the last flush, kept as they came (an observe is a list append) and
    counted by bucket when flushed: sorted once, each bucket's count is then two bisections of the batch, however
    many observations it holds. flush() adds them to the child, bucket by bucket, as its own observe would have
    (a value goes to the first bucket whose bound is >= it)."""

    __slots__ = ("child", "bounds", "values")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = tuple(child._upper_bounds)  # ends with +Inf: every finite value has a bucket
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)

    def flush(self) -> None:
        values = self.values
        if not values:
            return
        self.values = []
        values.sort()
        buckets = self.child._buckets
        counted = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(values, bound, counted)
            if upto > counted:
                buckets[i].inc(upto - counted)
                counted = upto
        self.child._sum.inc(math.fsum(values))


class _Counter:
    """A counter child's increments since the last flush."""

    __slots__ = ("child", "value")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def flush(self) -> None:
        if self.value:
            self.child.inc(self.value)
            self.value = 0.0


class _Level:
    """A gauge child set, at each flush, to what `read` returns: for a level that requests change (no set() on the
    request path)."""

    __slots__ = ("child", "read")

    def __init__(self, child: Any, read: Callable[[], float]) -> None:
        self.child = child
        self.read = read

    def flush(self) -> None:
        self.child.set(self.read())


class _Flush:
    """Registered first in the registry: whatever collects it (a scrape, get_sample_value) has what the requests
    observed so far written to the metrics first."""

    def __init__(self, flush: Any) -> None:
        self._flush = flush

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._flush()
        return []


class Metrics:
    """What each request contributes (observe) is added up in plain Python and written to prometheus_client's
    metrics in batches: when the registry is collected (a scrape) and at every wake-up of the telemetry writer
    (flush), so that with several workers each one's files are at most a flush interval behind."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._pending: list[_Histogram | _Counter | _Level] = []  # every accumulator made, flushed together
        self._unflushed = 0  # requests observed since the last flush
        r.register(_Flush(self.flush))
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
        # The request driver counts its requests here, a plain int; flush() sets the gauge from it (a Gauge's
        # inc and dec take its lock, and in multiprocess mode write its file, twice per request).
        self.requests_in_flight = 0
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
        self._status: dict[tuple[str, str, str, int], _Counter] = {}
        self._filters: dict[str, _Histogram] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._overhead: dict[str, _Histogram] = {}

    def _histogram(self, child: Any) -> _Histogram:
        histogram = _Histogram(child)
        self._pending.append(histogram)
        return histogram

    def _counter(self, child: Any) -> _Counter:
        counter = _Counter(child)
        self._pending.append(counter)
        return counter

    def counter(self, child: Any) -> _Counter:
        """A counter child whose increments (`.value += n`) are added up here and written to it when the metrics
        are read or flushed: for a component's own counters on the request path."""
        return self._counter(child)

    def level(self, child: Any, read: Callable[[], float]) -> None:
        """A gauge child set to read() whenever the metrics are read or flushed."""
        self._pending.append(_Level(child, read))

    def _route(self, endpoint: str, model: str, provider: str) -> tuple[Any, ...]:
        key = (endpoint, model, provider)
        children = self._children.get(key)
        if children is None:
            histogram, counter = self._histogram, self._counter
            children = (
                histogram(self.request_seconds.labels(*key)),
                histogram(self.upstream_seconds.labels(*key)),
                histogram(self.ttft_seconds.labels(*key)),
                counter(self.tokens.labels(*key, "prompt")),
                counter(self.tokens.labels(*key, "completion")),
                counter(self.tokens.labels(*key, "cached")),
                counter(self.tokens.labels(*key, "reasoning")),
                counter(self.cost.labels(*key)),
            )
            self._children[key] = children
        return children

    def observe(self, ctx: RequestContext) -> None:
        """Everything a finished request contributes. Runs once per request, so it stays lean: plain additions and
        list appends, written to the metrics by flush() (at the latest every FLUSH_EVERY requests)."""
        model = ctx.model if ctx.group is not None else "unknown"
        key = (ctx.endpoint, model, ctx.provider or "none")
        children = self._children.get(key)  # _route's lookup, written out: the call only for a new key
        if children is None:
            children = self._route(*key)
        total, upstream, ttft, prompt, completion, cached, reasoning, cost = children
        status_class = ctx.status // 100
        counter = self._status.get((*key, status_class))
        if counter is None:
            counter = self._status[(*key, status_class)] = self._counter(
                self.requests.labels(*key, f"{status_class}xx")
            )
        counter.value += 1
        # total_ns, upstream_ns and overhead_ns() as the context computes them, each worked out once.
        started_ns = ctx.started_ns
        total_ns = (ctx.finished_ns or time.perf_counter_ns()) - started_ns
        total.values.append(total_ns / 1e9)
        upstream_ns = ctx.upstream_ns
        if upstream_ns:
            upstream.values.append(upstream_ns / 1e9)
        if ctx.first_token_ns:
            ttft.values.append((ctx.first_token_ns - started_ns) / 1e9)
        overhead = self._overhead.get(ctx.endpoint)
        if overhead is None:
            overhead = self._overhead[ctx.endpoint] = self._histogram(self.overhead_seconds.labels(ctx.endpoint))
        own_ns = total_ns - upstream_ns
        overhead.values.append(own_ns / 1e9 if own_ns > 0 else 0.0)
        usage = ctx.usage
        if usage is not None:
            prompt.value += usage.prompt_tokens
            completion.value += usage.completion_tokens
            if usage.cached_tokens:
                cached.value += usage.cached_tokens
            if usage.reasoning_tokens:
                reasoning.value += usage.reasoning_tokens
        if ctx.cost_usd:
            cost.value += ctx.cost_usd
        filters = self._filters
        for span in ctx.spans:
            name = span.name
            child = filters.get(name)
            if child is None:
                child = filters[name] = self._histogram(self.filter_seconds.labels(name))
            duration = span.duration_ns - upstream_ns if name == "route" else span.duration_ns
            child.values.append(duration / 1e9 if duration > 0 else 0.0)
        error = ctx.error
        if error is not None:
            self.error(error.domain, error.error_type)
        self._unflushed += 1
        if self._unflushed >= FLUSH_EVERY:  # the observations kept wait for no more than this many requests
            self.flush()

    def flush(self) -> None:
        """Write what the requests observed since the last flush to the metrics (a few µs per label set)."""
        self._unflushed = 0
        for pending in self._pending:
            pending.flush()
        self.in_flight.set(self.requests_in_flight)

    def error(self, domain: str, error_type: str) -> None:
        child = self._errors.get((domain, error_type))
        if child is None:
            child = self._errors[(domain, error_type)] = self.errors.labels(domain, error_type)
        child.inc()

    def render(self) -> tuple[bytes, str]:
        if multiprocess_dir():
            self.flush()  # this worker's own, before the files of every worker are read
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
