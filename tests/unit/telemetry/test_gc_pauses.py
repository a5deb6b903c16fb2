import gc

from prometheus_client import CollectorRegistry

from gateway.telemetry.gc_pauses import GcPauses


def _count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value("gateway_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_each_collection_is_timed_by_generation_while_started_and_only_then():
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    pauses.start()
    pauses.start()  # twice: still one callback
    try:
        gc.collect(2)
        gc.collect(0)
        assert _count(registry, "2") >= 1
        assert _count(registry, "0") >= 1
        assert registry.get_sample_value("gateway_gc_pause_seconds_sum", {"generation": "2"}) > 0
    finally:
        pauses.stop()
    before = _count(registry, "2")
    gc.collect(2)
    assert _count(registry, "2") == before
    assert pauses._callback not in gc.callbacks
