from __future__ import annotations

import asyncio

import pytest

from gateway.context import RequestContext
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.queue import TelemetryQueue


def ctx(i: int) -> RequestContext:
    return RequestContext(request_id=f"r{i}", endpoint="chat/completions", headers=[], raw_body=b"", body={})


class Sink:
    name = "fake"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []

    async def write(self, records):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("sink down")
        self.batches.append([r["id"] for r in records])


def make_queue(sink: Sink, **options) -> tuple[TelemetryQueue, Metrics]:
    metrics = Metrics()

    async def to_records(batch):
        return [{"id": c.request_id} for c in batch]

    queue = TelemetryQueue(metrics=metrics, to_records=to_records, sinks=[sink], **options)
    return queue, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.anyio
async def test_a_full_queue_drops_and_counts_but_never_blocks():
    queue, metrics = make_queue(Sink(), maxsize=3)
    results = [queue.put(ctx(i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert sample(metrics, "gateway_telemetry_dropped_total") == 2


@pytest.mark.anyio
async def test_batches_are_written_in_order_and_a_failing_sink_is_retried_with_the_same_batch():
    sink = Sink(failures=2)
    queue, metrics = make_queue(sink, batch_size=2, flush_interval_s=0.01, max_backoff_s=0.05)
    for i in range(5):
        queue.put(ctx(i))
    queue.start()
    end = asyncio.get_running_loop().time() + 30  # the retries' pace depends on the machine: wait for the batches
    while sum(map(len, sink.batches)) < 5:
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)
    assert sink.batches == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    assert sample(metrics, "gateway_telemetry_sink_errors_total", sink="fake") == 2
    assert sample(metrics, "gateway_telemetry_written_total", sink="fake") == 5
    await queue.close(deadline_s=1)


@pytest.mark.anyio
async def test_close_flushes_what_is_queued():
    sink = Sink()
    queue, _ = make_queue(sink, flush_interval_s=60)
    queue.start()
    for i in range(3):
        queue.put(ctx(i))
    await queue.close(deadline_s=1)
    assert sink.batches == [["r0", "r1", "r2"]]
    assert len(queue) == 0


@pytest.mark.anyio
async def test_close_gives_up_at_the_deadline_and_says_how_many_are_left(caplog):
    queue, _ = make_queue(Sink(failures=1000), flush_interval_s=60)
    queue.put(ctx(1))
    await queue.close(deadline_s=0.2)
    assert len(queue) == 1
    assert "1 records could not be written" in caplog.text
