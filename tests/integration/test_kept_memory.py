"""What the gateway keeps in memory for long weighs what its bounds count.

responses.memory_max_mb and the memory cache's max_mb bound the sums of the kept JSONs' lengths. orjson (3.12
and later) hands its bytes back in the buffer it wrote them into, never shrunk: 4 KiB for a JSON of 100 bytes, 16 KiB
for one of 1.5 KiB. Kept as they came, ten thousand stored responses held 200 MB where the bound counted 13.

Each test has the gateway keep answers made the ways it makes them (a translated Responses answer, its input items,
a streamed answer assembled for the cache), then measures with tracemalloc what memory gives back when its kept
objects are dropped, against the lengths the bound counted."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from gateway.guardrails import json_schema
from tests.conftest import KEY, running
from tests.integration.helpers import wait_until

N = 60
HEADERS = {"authorization": f"Bearer {KEY}"}
# What a stored response holds beside the bytes memory_max_mb counts (the JSONs): the StoredResponse, its strings,
# the LRU's slot; memory_max bounds their number.
PER_OBJECT_OVERHEAD = 1024


@contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def held_by(drop: Callable[[], None]) -> int:
    """The bytes the traced allocations shrink by when `drop` lets the kept objects go."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    drop()
    gc.collect()
    return before - tracemalloc.get_traced_memory()[0]


def test_stored_responses_hold_what_memory_max_mb_counts(make_config) -> None:
    with running(make_config()) as (url, gateway), httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        conversations = gateway.conversations
        with traced():
            for n in range(N):
                r = client.post("/v1/responses", json={"model": "demo", "input": f"Turn {n}: say hello."})
                assert r.status_code == 200, r.text
            wait_until(lambda: not conversations._unsaved, timeout=10)
            counted = conversations._memory_bytes
            assert len(conversations._memory) == N
            assert counted > N * 500  # each answer's JSON is some 1 KB

            def drop() -> None:
                conversations._memory.clear()

            held = held_by(drop)
        conversations._memory_bytes = 0
    assert held <= counted + N * PER_OBJECT_OVERHEAD, (held, counted)


def test_cached_answers_hold_what_the_memory_backends_bound_counts(make_config) -> None:
    config = make_config(pipeline=["auth", "cache", "route"], features={"defaults": {"cache": "exact"}})
    with running(config) as (url, gateway), httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        memory = gateway.cache.memory
        with traced():
            for n in range(N):  # streamed: each answer is assembled from its chunks and encoded to be kept
                body = {"model": "demo", "stream": True, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Question {n}: what is 2 + {n}?"}]}  # fmt: skip
                r = client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                assert r.headers["x-gateway-cache"] == "miss"
            # The records written, so that what the writer frees meanwhile is not counted as the entries'.
            wait_until(lambda: len(memory.entries) == N and not len(gateway.queue), timeout=10)
            counted = memory.bytes  # each entry's body and ENTRY_OVERHEAD

            def drop() -> None:
                memory.entries.clear()

            held = held_by(drop)
        memory.bytes = 0
    # ENTRY_OVERHEAD counts what an entry holds beside its body (at 256: 51,707 held, 37,710 counted); 64 bytes an
    # entry for what other threads free while it is measured.
    assert held <= counted + N * 64, (held, counted)


def test_cached_schema_validators_hold_what_their_bound_counts() -> None:
    """response_format's schemas are the clients', as large as a body: the validators' LRU is bounded by what they
    hold (json_schema._held's count), and its keys are digests, not orjson's over-sized JSON."""
    cache = json_schema._ValidatorCache(json_schema.CACHE_SIZE, max_bytes=128 << 10)

    def schema(n: int) -> dict[str, Any]:
        properties = {f"field_{n}_{i}": {"type": "string", "description": "d" * 20, "maxLength": i} for i in range(5)}
        return {"type": "object", "properties": properties, "required": [f"field_{n}_0"]}

    with traced():
        for n in range(N):
            cache.get(orjson.loads(orjson.dumps(schema(n))))  # parsed as a request's body is: the cache's own copy
        counted = cache.bytes
        kept = len(cache._items)
        assert 10 < kept < N  # some evicted by the byte bound, not by the count
        held = held_by(cache._items.clear)
    assert counted <= cache.max_bytes
    assert held <= counted, (held, counted)
    huge = {"type": "object", "properties": {f"f{i}": {"type": "string", "description": "d" * 200} for i in range(200)}}
    cache.get(huge)  # counted as more than an eighth of the bound: validated, not kept
    assert not cache._items


def test_the_similarity_workers_vectors_hold_one_row_each() -> None:
    """The recent prompts' vectors (cache_size of them) are rows of the batches they were embedded in: each must
    hold its own row, not the batch's matrix that a view of it keeps alive."""
    from gateway.similarity.prompt import SimilarityItem
    from gateway.similarity.worker import SimilarityWorker

    worker = SimilarityWorker(store=None, registry=CollectorRegistry(), cache_size=1)
    batch = [
        SimilarityItem(f"r{n}", 0.0, "p1", "demo", f"Prompt number {n}: tell me about {n} things") for n in range(N)
    ]
    with traced():
        asyncio.run(worker.process(batch))
        assert len(worker._vectors) == 1
        row_bytes = next(iter(worker._vectors.values())).nbytes
        held = held_by(worker._vectors.popitem)  # the entry alone: clear() would free the dict's table too
    assert held <= row_bytes + PER_OBJECT_OVERHEAD, (held, row_bytes)  # a view held N rows: 60 x 2 KB
