"""The outboxes' metrics (gateway/sinks/outbox.py): records by sink and outcome, queue depth, spool bytes."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge


class SinkMetrics:
    """The outboxes' metrics on one registry, created once: several outboxes share them, a label per sink."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "gateway_sink_records", "Telemetry records by sink and outcome (queued, sent, retried, spooled, "
            "dropped, rejected, dead_lettered).", ["sink", "outcome"], registry=registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "gateway_sink_queue_depth", "Records waiting for a sink, in memory and in its spool.", ["sink"],
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.spool_bytes = Gauge(
            "gateway_sink_spool_bytes", "Bytes waiting in a sink's disk spool.", ["sink"], registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip


# Weak: a registry that is gone (a test's) takes its metrics along, and its id is never mistaken for a new one's.
_metrics: weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics] = weakref.WeakKeyDictionary()


def sink_metrics(registry: CollectorRegistry) -> SinkMetrics:
    metrics = _metrics.get(registry)
    if metrics is None:
        metrics = _metrics[registry] = SinkMetrics(registry)
    return metrics
