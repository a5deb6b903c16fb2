"""Metrics adds up what requests observe and writes it to prometheus_client in batches: the exposition is the one
prometheus_client's own observe and inc would give, whenever it is read."""

from __future__ import annotations

import itertools

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.context import RequestContext, Span, Usage
from gateway.telemetry.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, Metrics

# Durations on and around the bucket bounds, past the last one, and zero.
SECONDS = [0.0, 0.00005, 0.0001, 0.00025, 0.0003, 0.005, 0.0051, 0.1, 0.99, 1.0, 29.9, 300.0, 301.0, 1000.0]


def finished(i: int, total_s: float, upstream_s: float) -> RequestContext:
    ctx = RequestContext(request_id=f"r{i}", endpoint="chat/completions", headers=[], raw_body=b"", body={})
    ctx.model = "gpt"
    ctx.group = object()  # type: ignore[assignment]
    ctx.provider = "openai"
    ctx.status = 200 if i % 3 else 502
    ctx.started_ns = 1_000_000
    ctx.finished_ns = ctx.started_ns + int(total_s * 1e9)
    if upstream_s:
        ctx.upstream_start_ns = ctx.started_ns
        ctx.upstream_end_ns = ctx.started_ns + int(upstream_s * 1e9)
        ctx.first_token_ns = ctx.upstream_end_ns
    ctx.usage = Usage(prompt_tokens=i, completion_tokens=2 * i, cached_tokens=i % 2, reasoning_tokens=0)
    ctx.cost_usd = 0.001 * i
    ctx.spans = [Span("auth", 0, int(total_s * 1e8)), Span("route", 0, ctx.finished_ns - ctx.started_ns)]
    return ctx


def expected(contexts: list[RequestContext]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The same requests through prometheus_client's own observe and inc."""
    r = CollectorRegistry()
    route = ["endpoint", "model", "provider"]
    total = Histogram("gateway_request_duration_seconds", "", route, buckets=LATENCY_BUCKETS, registry=r)
    upstream = Histogram("gateway_upstream_duration_seconds", "", route, buckets=LATENCY_BUCKETS, registry=r)
    ttft = Histogram("gateway_time_to_first_token_seconds", "", route, buckets=LATENCY_BUCKETS, registry=r)
    overhead = Histogram("gateway_overhead_seconds", "", ["endpoint"], buckets=OVERHEAD_BUCKETS, registry=r)
    filters = Histogram("gateway_filter_duration_seconds", "", ["filter"], buckets=OVERHEAD_BUCKETS, registry=r)
    requests = Counter("gateway_requests", "", [*route, "status_class"], registry=r)
    tokens = Counter("gateway_tokens", "", [*route, "kind"], registry=r)
    cost = Counter("gateway_cost_usd", "", route, registry=r)
    for ctx in contexts:
        key = (ctx.endpoint, ctx.model, ctx.provider)
        for kind in ("prompt", "completion", "cached", "reasoning"):  # every kind is shown once the route is
            tokens.labels(*key, kind)
        requests.labels(*key, f"{ctx.status // 100}xx").inc()
        total.labels(*key).observe(ctx.total_ns / 1e9)
        if ctx.upstream_ns:
            upstream.labels(*key).observe(ctx.upstream_ns / 1e9)
            ttft.labels(*key).observe((ctx.first_token_ns - ctx.started_ns) / 1e9)
        overhead.labels(ctx.endpoint).observe(ctx.overhead_ns() / 1e9)
        assert ctx.usage is not None
        tokens.labels(*key, "prompt").inc(ctx.usage.prompt_tokens)
        tokens.labels(*key, "completion").inc(ctx.usage.completion_tokens)
        if ctx.usage.cached_tokens:
            tokens.labels(*key, "cached").inc(ctx.usage.cached_tokens)
        if ctx.cost_usd:
            cost.labels(*key).inc(ctx.cost_usd)
        for span in ctx.spans:
            duration = span.duration_ns - (ctx.upstream_ns if span.name == "route" else 0)
            filters.labels(span.name).observe(max(0, duration) / 1e9)
    return samples(r)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def ours(metrics: Metrics, names: set[str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {key: value for key, value in samples(metrics.registry).items() if key[0] in names}


def test_the_batched_metrics_read_as_prometheus_clients_own_observe_and_inc():
    contexts = [finished(i, t, u) for i, (t, u) in enumerate(itertools.product(SECONDS, [0.0, *SECONDS[::3]]))]
    want = expected(contexts)
    metrics = Metrics()
    for ctx in contexts[:40]:
        metrics.observe(ctx)
    metrics.flush()  # the writer's wake-up, between two batches
    for ctx in contexts[40:]:
        metrics.observe(ctx)
    got = ours(metrics, {name for name, _ in want})  # collecting flushes what is left
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_the_exposition_is_read_whole_at_any_time():
    metrics = Metrics()
    metrics.observe(finished(1, 0.02, 0.01))
    text = generate_latest(metrics.registry).decode()
    assert 'gateway_request_duration_seconds_bucket{endpoint="chat/completions",le="0.025",model="gpt"' in text
    assert (
        'gateway_requests_total{endpoint="chat/completions",model="gpt",provider="openai",status_class="2xx"} 1.0'
        in text
    )
    metrics.observe(finished(2, 0.02, 0.01))
    assert (
        metrics.registry.get_sample_value(
            "gateway_request_duration_seconds_count",
            {"endpoint": "chat/completions", "model": "gpt", "provider": "openai"},
        )
        == 2
    )
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    assert (
        metrics.registry.get_sample_value(
            "gateway_tokens_total",
            {"endpoint": "chat/completions", "model": "gpt", "provider": "openai", "kind": "prompt"},
        )
        == 3
    )


def test_observations_wait_for_at_most_flush_every_requests(monkeypatch):
    """Kept as they came until a flush: with nothing else flushing (no scrape, a writer asleep), every FLUSH_EVERY
    requests flush them, so the lists they wait in stay bounded."""
    from gateway.telemetry import metrics as module

    monkeypatch.setattr(module, "FLUSH_EVERY", 10)
    metrics = Metrics()
    for i in range(25):
        metrics.observe(finished(i, 0.02, 0.01))
    (total, *_) = metrics._route("chat/completions", "gpt", "openai")
    assert len(total.values) == 5
    child = metrics.request_seconds.labels("chat/completions", "gpt", "openai")
    assert sum(bucket.get() for bucket in child._buckets) == 20  # written by the flushes, before any read
