"""Helpers shared by the integration tests: SDK clients, SSE parsing, polling, reading the telemetry store."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
from openai.types.chat import ChatCompletionMessageParam
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import KEY
from tests.servers import Upstream


@dataclass
class RawUpstream(Upstream):
    """The test upstream that also keeps the exact bytes of each request body."""

    raw_bodies: list[bytes] = field(default_factory=list)

    async def _record(self, request: Request) -> dict[str, Any]:
        self.raw_bodies.append(await request.body())
        return await super()._record(request)

    async def chat(self, request: Request) -> Response:
        """Also `oddbody-<status>`: an answer with that status whose body is JSON but not an object."""
        model = orjson.loads(await request.body()).get("model", "")
        if model.startswith("oddbody-"):
            await self._record(request)
            return Response(
                b'["upstream overloaded"]', status_code=int(model.split("-")[1]), media_type="application/json"
            )
        return await super().chat(request)


# Every sdk_client made in a test, closed when it ends (conftest.py's close_sdk_clients): a client left to the
# collector closes its kept-alive socket whenever the collector runs, and the ResourceWarning then fails whichever
# test is running at that moment (filterwarnings = error), not the one that leaked it.
_clients: list[openai.OpenAI] = []


def sdk_client(url: str, key: str = KEY, **options: Any) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10, **options)
    _clients.append(client)
    return client


def close_sdk_clients() -> None:
    while _clients:
        _clients.pop().close()


def async_sdk_client(url: str, key: str = KEY, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10, **options)


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def sse_payloads(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order ([DONE] included)."""
    return [event[len("data: ") :] for event in text.split("\n\n") if event.startswith("data: ")]


def json_events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in sse_payloads(text) if p != "[DONE]"]


def assert_error_shape(response: httpx.Response, status: int, *, code: str | None = None) -> dict[str, Any]:
    """The response is OpenAI's error JSON with this status; returns the `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code
    return dict(error)


def assert_sdk_error(exc: openai.APIStatusError, status: int) -> dict[str, Any]:
    """The SDK's exception carries the status and OpenAI's error object (the SDK unwraps `error` into body)."""
    assert exc.status_code == status
    assert "Traceback" not in exc.response.text
    assert set(exc.response.json()) == {"error"}
    body = exc.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert exc.message == body["message"] or body["message"] in exc.message
    return body


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.01) -> bool:
    """Poll until the predicate holds. The deadline is generous: it is reached only when the test is failing, and a
    busy machine must not fail a test that would pass. A predicate that asks servers may want a longer interval."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_settled(gateway: Any) -> None:
    """Until the ratelimit filter's settlements have reached Redis: they leave in the background, a batch at a
    time, after the answer (the memory backend settles before it)."""
    from gateway.state.limiter_redis import RedisLimiter

    limits = gateway.rate_limits
    primary = limits.failover.primary if limits is not None else None
    limiters = [primary] if isinstance(primary, RedisLimiter) else []
    assert wait_until(lambda: all(limiter.settled for limiter in limiters)), "settlements were not sent"


def record_of(db_path: Path, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The telemetry record of one request, read from the SQLite file once the queue has flushed it; by its id
    (the gateway's, `x-gateway-request-id`) or by the X-Request-ID the test sent (`client_request_id`)."""
    found: dict[str, Any] = {}

    def look() -> bool:
        if not db_path.exists():
            return False
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(
                    "SELECT * FROM model_cost_logs WHERE ? IN (id, client_request_id)", (request_id,)
                ).fetchall()
            except sqlite3.OperationalError:  # the table is not there yet
                return False
        if not rows:
            return False
        assert len(rows) == 1, f"{len(rows)} records answer to {request_id}"
        found.update(dict(rows[0]))
        return True

    assert wait_until(look, timeout), f"no record of {request_id} in {db_path}"
    return found
