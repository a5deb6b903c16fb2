"""Nothing the gateway keeps grows with the number of requests once its bounded structures are full.

One round is a request of every kind: chat whole and streamed (through the mock and through a real upstream over
loopback), cache misses kept and hits, Responses stored (a chain), not stored and streamed, /v1/messages,
embeddings, a bad key (401), broken JSON (400), an unknown model (404), a rate limit (429), an upstream's 500 and a
first-byte timeout (504), and a client that leaves in the middle of a stream. The bounded structures are set small
(the cache's memory, stored responses) and are full after the warm-up, so that what they evict weighs what they
take in. tracemalloc then measures what ROUNDS more rounds leave allocated: a context, a body or a list entry kept
per request would be ROUNDS x 18 of them."""

from __future__ import annotations

import gc
import itertools
import socket
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from gateway.sinks.outbox import Outbox
from tests.conftest import KEY, running
from tests.integration.helpers import wait_until
from tests.servers import Upstream, serve

WARM_UP = 25
ROUNDS = 60
# What ROUNDS rounds (1,080 requests) may leave behind: the drift of the libraries (SQLite's statement caches on
# the store's thread, the regular expressions' cache, uvicorn's date header), measured at 6-36 KB. One id kept a
# request (the leak this was checked with): 113 KB.
GROWTH = 64 << 10
LIMITED_KEY = "sk-limited-key"
BAD_KEYS = [f"sk-bad-{n}" for n in range(3)]  # the key cache keeps unknown keys too: a few, cycled, fill it
HEADERS = {"authorization": f"Bearer {KEY}"}


def overrides(upstream: str) -> dict[str, Any]:
    return {
        "providers": {"up": {"type": "openai", "base_url": f"{upstream}/v1", "api_key": "sk-up"}},
        "models": {
            "fail": {"deployments": [{"provider": "mock", "model": "demo-error-500"}]},
            # Its own first-byte timeout: the others keep the default, so that a busy machine's slow answer is
            # never a 504 where the test expects a 200.
            "hang": {"deployments": [{"provider": "mock", "model": "demo-hang", "timeouts": {"first_byte_s": 0.05}}]},
            "up": {"deployments": [{"provider": "up", "model": "gpt-up"}]},
        },
        # The breakers' windows of a second each (30 by default): bounded by time, they would grow all along.
        "routing": {"retries": 0, "breaker": {"window_s": 1}},
        "pipeline": ["auth", "ratelimit", "cache", "route"],
        "features": {"defaults": {"cache": "exact"}},
        "cache": {"memory_max_mb": 0.01},
        "responses": {"memory_max": 20},
        "auth": {
            "keys": [
                {"name": "tester", "key": KEY, "project": "p1", "team": "t1"},
                {"name": "limited", "key": LIMITED_KEY, "project": "p2", "team": "t1"},
            ]
        },
        "limits": {"rules": [{"scope": "project", "match": "p2", "rpm": 1}]},
    }


class Load:
    def __init__(self, url: str, client: httpx.Client, upstream: Upstream) -> None:
        self.url = url
        self.client = client
        self.upstream = upstream
        self.numbers = itertools.count()
        self.previous: str | None = None

    def chat(self, model: str = "demo", content: str | None = None, **extra: Any) -> dict[str, Any]:
        n = next(self.numbers)
        text = content or f"Question {n}: what is {n} + 1?"
        return {"model": model, "messages": [{"role": "user", "content": text}], **extra}

    def post(self, path: str, body: dict[str, Any], key: str = KEY) -> int:
        return self.client.post(path, json=body, headers={"authorization": f"Bearer {key}"}).status_code

    def stream(self, path: str, body: dict[str, Any]) -> int:
        with self.client.stream("POST", path, json=body) as r:
            r.read()
            return r.status_code

    def leave_mid_stream(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        body = orjson.dumps(self.chat("slow-stream", stream=True))
        with socket.create_connection((host, int(port))) as sock:
            head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {KEY}\r\n"
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode() + body)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")

    def round(self, n: int) -> list[int]:
        chat = self.chat
        statuses = [
            self.post("/v1/chat/completions", chat()),
            self.post("/v1/chat/completions", chat(temperature=0)),  # a miss, kept
            self.post("/v1/chat/completions", chat(content="Always the same", temperature=0)),  # a hit
            self.stream("/v1/chat/completions", chat(stream=True, temperature=0)),  # assembled and kept
            self.post("/v1/chat/completions", chat("up")),
            self.stream("/v1/chat/completions", chat("up", stream=True, stream_options={"include_usage": True})),
        ]
        turn: dict[str, Any] = {"model": "demo", "input": f"Turn {next(self.numbers)}"}
        if self.previous:
            turn["previous_response_id"] = self.previous
        r = self.client.post("/v1/responses", json=turn)
        self.previous = r.json()["id"] if r.status_code == 200 else None
        statuses += [
            r.status_code,
            self.post("/v1/responses", {"model": "demo", "input": "Not kept", "store": False}),
            self.stream("/v1/responses", {"model": "demo", "input": f"Streamed {next(self.numbers)}", "stream": True}),
            self.post("/v1/messages", {"model": "demo", "max_tokens": 5, "messages": chat()["messages"]}),
            self.post("/v1/embeddings", {"model": "demo-embedding", "input": f"Embed {next(self.numbers)}"}),
            self.post("/v1/chat/completions", chat(), key=BAD_KEYS[n % len(BAD_KEYS)]),
            self.client.post("/v1/chat/completions", content=b'{"model": "demo", "messages": [').status_code,
            self.post("/v1/chat/completions", chat(f"no-such-model-{n}")),
            self.post("/v1/chat/completions", chat(), key=LIMITED_KEY),
            self.post("/v1/chat/completions", chat("fail")),
            self.post("/v1/chat/completions", chat("hang")),
        ]
        self.leave_mid_stream()
        self.upstream.requests.clear()  # the test upstream's own record
        return statuses


def idle(gateway: Gateway) -> bool:
    """Nothing in flight: what waits for a sink (in memory or in its spool, read back) is kept for a while, not
    for good, and the busier the machine the more of it there is."""
    if gateway.conversations._unsaved:
        return False
    for queue in (gateway.queue, gateway.event_queue):
        if queue is not None and len(queue):
            return False
        for sink in queue.sinks if queue is not None else ():
            stats = sink.stats() if isinstance(sink, Outbox) else {}
            if stats.get("queued") or stats.get("spooled") or stats.get("state", "ok") != "ok":
                return False
    return True


def test_memory_does_not_grow_with_requests(make_config: Callable[..., GatewayConfig]) -> None:
    upstream = Upstream()
    with (
        serve(upstream.app()) as upstream_url,
        running(make_config(**overrides(upstream_url))) as (url, gateway),
        httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client,
    ):
        load = Load(url, client, upstream)
        first = load.round(0)
        assert first[:12] == [200] * 11 + [401], first
        assert first[12:] == [400, 404, 200, 500, 504], first  # the limited key's first request is admitted

        def settled() -> int:
            assert wait_until(lambda: idle(gateway), timeout=30)
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        tracemalloc.start()
        try:
            for n in range(1, WARM_UP):
                load.round(n)
            before, snapshot = settled(), tracemalloc.take_snapshot()
            limited = [load.round(n)[14] for n in range(WARM_UP, WARM_UP + ROUNDS)]
            after = settled()
            grown = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")[:5]
        finally:
            tracemalloc.stop()
    assert after - before < GROWTH, (after - before, [str(stat) for stat in grown])
    # The limited key's bucket (1 a minute) refused them; a run slower than a minute may see one refilled.
    assert limited.count(429) >= ROUNDS - 1, limited
