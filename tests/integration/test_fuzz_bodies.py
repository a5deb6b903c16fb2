"""Fuzz: odd request bodies through a gateway with every filter on never get a 5xx, and every refusal has the
error shape of its API (OpenAI's; Anthropic's on /v1/messages).

The gateway runs auth, policy (the shipped policies, a token condition that always counts, a rewrite), ratelimit
(TPM and a budget on the in-memory backend), guardrails (every check, json_schema included) and route (the mock
provider, with a context-window fallback so that the router counts tokens too). Bodies come from
tests/fuzz_bodies.py: valid bodies of each endpoint, mutated. Requests are ASGI calls in process, so 10,000 take
seconds. GATEWAY_FUZZ_COUNT and GATEWAY_FUZZ_SEED change the count and the seed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import build_app
from gateway.config import GatewayConfig
from tests.fuzz_bodies import bodies

COUNT = int(os.environ.get("GATEWAY_FUZZ_COUNT", "10000"))
SEED = int(os.environ.get("GATEWAY_FUZZ_SEED", "13"))
ROOT = Path(__file__).resolve().parents[2]

KEYS = {
    # plan free: prompt-length.yaml's token condition is evaluated; project clinical: strict-project.yaml's checks
    "sk-fuzz-free": {"name": "free", "project": "clinical", "team": "t", "metadata": {"plan": "free"}},
    "sk-fuzz-pro": {"name": "pro", "project": "p2", "team": "t", "metadata": {"plan": "pro", "region": "eu"}},
}

EXTRA_POLICIES = """
policies:
  - name: fuzz-every-check
    priority: 50
    actions:
      guardrails:
        length: {action: block, max_tokens: 200000}
        json_schema: {action: retry}
        keywords: {action: redact, stage: both, deny: ["forbidden"]}
      rewrite: {max_tokens: 64, system: "Answer briefly."}
      limit: {tpm: 100000000, budget_usd: 1000000}
  - name: fuzz-token-condition
    priority: 40
    match:
      tokens: {gt: 500}
    actions:
      deny: {status: 400, code: prompt_too_long, message: "too long"}
"""


def fuzz_config(make_config: Callable[..., GatewayConfig], tmp_path: Path) -> GatewayConfig:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fuzz.yaml").write_text(EXTRA_POLICIES)
    price = {"input": 1.0, "output": 2.0}
    return make_config(
        pipeline=["auth", "policy", "ratelimit", "guardrails", "route"],
        auth={"mode": "keys", "keys": [{"key": key, **info} for key, info in KEYS.items()]},
        policies={"paths": [str(ROOT / "policies"), str(policies)], "reload": False},
        limits={
            "backend": "memory",
            "rules": [
                {"scope": "key", "tpm": 500_000_000, "rpm": 10_000_000},
                {"scope": "project", "budget_usd": 1_000_000, "period": "month"},
                {"scope": "model", "match": "demo", "tpm": 900_000_000},
            ],
        },
        models={
            "demo": {
                "deployments": [
                    {"provider": "mock", "model": "demo-1", "price": price, "max_input_tokens": 64, "region": "eu"}
                ],
                "context_window_fallback": "demo-long",
            },
            "demo-long": {"deployments": [{"provider": "mock", "model": "demo-2", "price": price, "region": "eu"}]},
            "demo-embedding": {
                "deployments": [{"provider": "mock", "model": "demo-embed", "price": price, "region": "eu"}]
            },
        },
    )


class Exchange:
    """One request through the ASGI app in process: its status, headers and whole body (a stream's too)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def call(app: Any, path: str, raw: bytes, key: str) -> Exchange:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"authorization", b"Bearer " + key.encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # never disconnects
        return {"type": "http.disconnect"}

    exchange = Exchange()
    await app(scope, receive, exchange.send)
    return exchange


def problems_of(endpoint: str, exchange: Exchange) -> str | None:
    """What is wrong with an answer, or None: a 5xx, an error without its API's shape, a stream without [DONE]."""
    if exchange.status >= 500 or exchange.status < 200:
        return f"status {exchange.status}: {exchange.body[:300]!r}"
    if exchange.status >= 400:
        try:
            error = orjson.loads(exchange.body)
        except orjson.JSONDecodeError:
            return f"{exchange.status} is not JSON: {exchange.body[:300]!r}"
        if endpoint == "messages":
            ok = {"type", "error"} <= set(error) <= {"type", "error", "request_id"} and error["type"] == "error"
            ok = ok and set(error["error"]) == {"type", "message"} and isinstance(error["error"]["message"], str)
        else:
            ok = set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
            ok = ok and isinstance(error["error"]["message"], str) and error["error"]["type"] != "api_error"
        return None if ok else f"{exchange.status} not in the API's error shape: {error}"
    if exchange.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        text = exchange.body
        if endpoint == "responses":
            return _responses_stream_problem(text)
        if endpoint != "messages" and not text.rstrip().endswith(b"data: [DONE]"):
            return f"stream without [DONE]: {text[-300:]!r}"
        for line in text.split(b"\n"):
            if line.startswith(b"data: {") and b'"error"' in line:
                error = orjson.loads(line[6:])["error"]
                if error.get("type") == "api_error" or error.get("code") == "internal_error":
                    return f"stream ended by a gateway error: {line[:300]!r}"
    return None


def _responses_stream_problem(text: bytes) -> str | None:
    """A Responses stream ends with its final event (no [DONE]); a failure the gateway caused is a problem."""
    events = [orjson.loads(line[6:]) for line in text.split(b"\n") if line.startswith(b"data: ")]
    if not events or events[-1]["type"] not in ("response.completed", "response.incomplete", "response.failed"):
        return f"Responses stream without its final event: {text[-300:]!r}"
    error = events[-1]["response"].get("error") or {}
    if events[-1]["type"] == "response.failed" and error.get("code") == "server_error":
        return f"stream ended by a gateway error: {text[-300:]!r}"
    return None


@pytest.mark.anyio
async def test_odd_bodies_through_every_filter_never_get_a_5xx(
    make_config: Callable[..., GatewayConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(fuzz_config(make_config, tmp_path))
    gateway = app.state.gateway
    await gateway.open()
    failures: list[str] = []
    statuses: dict[int, int] = {}
    keys = list(KEYS)
    caplog.set_level(logging.ERROR)
    try:
        for i, (endpoint, body) in enumerate(bodies(SEED, COUNT)):
            raw = orjson.dumps(body)
            exchange = await call(app, f"/v1/{endpoint}", raw, keys[i % len(keys)])
            statuses[exchange.status] = statuses.get(exchange.status, 0) + 1
            problem = problems_of(endpoint, exchange)
            if problem is not None:
                failures.append(f"#{i} {endpoint} {raw[:400]!r}: {problem}")
    finally:
        await gateway.close()
    # An unhandled error anywhere (the endpoints, the pipeline, the telemetry writers) is logged at ERROR.
    errors = [
        r.getMessage() + (f" {r.exc_info[1]!r}" if r.exc_info else "")
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]
    assert not failures, f"{len(failures)} of {COUNT} bodies failed (seed {SEED}):\n" + "\n".join(failures[:20])
    assert not errors, "errors logged:\n" + "\n".join(errors[:20])
    # The fuzz is worth something only if the bodies reach every outcome: served, refused at the door, refused by
    # the filters behind it (a guardrail, a policy, an unknown model).
    assert statuses.get(200, 0) > COUNT // 10, statuses
    assert statuses.get(400, 0) > COUNT // 4, statuses
    assert statuses.get(404, 0) > 0, statuses
