"""A client that leaves, at any moment, stops its request: the upstream call is closed at once, nothing is retried
or sent to a fallback for it, the stages it entered still settle, and its record is 499 ClientClosed.

Clients here are raw sockets (they close exactly when the test says) and the upstream is a socket-level probe
that sees when the gateway closes its connection (tests/probe_upstream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import pipeline
from gateway.components import Components
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.runtime import Gateway
from gateway.server import watch as watch_module
from tests.conftest import KEY, running
from tests.integration.helpers import wait_until
from tests.probe_upstream import ProbeUpstream
from tests.servers import serve

# Generous: the gateway closes the upstream within a few ms; this only has to hold on a loaded machine.
CLOSE_DEADLINE_S = 2.0


@pytest.fixture
def probe() -> Iterator[tuple[str, ProbeUpstream]]:
    upstream = ProbeUpstream()
    with upstream.serve() as url:
        yield url, upstream


def probe_overrides(url: str) -> dict[str, Any]:
    """Every model has retries and a fallback (to another model of the probe): any of them that started after the
    client left would reach the probe. first_byte_s is short so that, were the attempt left running, its
    timeout would start a retry while the test still looks."""
    return {
        "providers": {"probe": {"type": "openai", "base_url": f"{url}/v1", "api_key": "sk-up"}},
        "models": {
            "hang": {"deployments": [{"provider": "probe", "model": "hang-1"}], "fallbacks": ["spare"]},
            "drip": {"deployments": [{"provider": "probe", "model": "drip-1"}], "fallbacks": ["spare"]},
            "spare": {"deployments": [{"provider": "probe", "model": "hang-spare"}]},
            "ok": {"deployments": [{"provider": "probe", "model": "ok-1"}]},
        },
        "routing": {
            "retries": 3,
            "backoff": {"base_s": 0.01, "max_s": 0.02},
            "timeouts": {"first_byte_s": 0.5, "idle_s": 5},
        },
    }


@pytest.fixture
def proxied_probe(
    make_config: Callable[..., GatewayConfig], probe: tuple[str, ProbeUpstream]
) -> Iterator[tuple[str, Gateway, ProbeUpstream]]:
    url, upstream = probe
    with running(make_config(**probe_overrides(url))) as (gateway_url, gateway):
        yield gateway_url, gateway, upstream


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def request_bytes(path: str, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: gateway", "content-type: application/json",
             f"content-length: {len(body) if length is None else length}"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chat(model: str, **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


AUTH = {"authorization": f"Bearer {KEY}"}


def leave(sock: socket.socket) -> float:
    """Close the connection as a client that gives up does; returns when."""
    at = time.monotonic()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    return at


def records(db_path: Path) -> list[dict[str, Any]]:
    if not db_path.exists():
        return []
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute("SELECT * FROM model_cost_logs ORDER BY ts")]
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def only_record(db_path: Path) -> dict[str, Any]:
    """The one record of the test's one request, once the request has ended (so nothing more can start for it)."""
    assert wait_until(lambda: len(records(db_path)) >= 1, timeout=10), "no record"
    rows = records(db_path)
    assert len(rows) == 1, rows
    return rows[0]


def assert_cut_by_client(record: dict[str, Any]) -> None:
    assert record["status"] == 499, record
    assert record["error_type"] == "client_closed"
    assert record["error_domain"] == "client"


def assert_upstream_closed_in_time(upstream: ProbeUpstream, left_at: float) -> float:
    (seen,) = upstream.requests
    assert wait_until(lambda: upstream.connection_closed(seen.connection) is not None, timeout=CLOSE_DEADLINE_S + 1)
    closed_at = upstream.connection_closed(seen.connection)
    assert closed_at is not None
    delay = closed_at - left_at
    assert delay < CLOSE_DEADLINE_S, f"the upstream connection was closed {delay:.3f} s after the client left"
    return delay


# -- each moment a client can leave at ------------------------------------------------------------------------------


def test_leaving_before_the_body_ends_calls_no_upstream(proxied_probe, db_path: Path) -> None:
    url, _, upstream = proxied_probe
    body = chat("ok")
    sock = connect(url)
    sock.sendall(request_bytes("/v1/chat/completions", body[:20], AUTH, length=len(body)))
    leave(sock)
    assert_cut_by_client(only_record(db_path))
    assert upstream.requests == []


@pytest.mark.parametrize(("model", "stream"), [("hang", False), ("hang", True), ("drip", True)])
def test_leaving_while_the_upstream_works_closes_it_and_starts_nothing_more(
    proxied_probe, db_path: Path, model: str, stream: bool
) -> None:
    """Waiting for the upstream's headers (hang), or mid-stream (drip): the attempt is closed within the deadline,
    and no retry or fallback follows, though the model has both and the first-byte timeout would start them."""
    url, _, upstream = proxied_probe
    sock = connect(url)
    sock.sendall(request_bytes("/v1/chat/completions", chat(model, stream=stream), AUTH))
    assert wait_until(lambda: len(upstream.requests) == 1, timeout=5)
    if model == "drip":
        assert b"w0" in sock.recv(65536) or b"w0" in sock.recv(65536)  # the stream has started
    left_at = leave(sock)
    assert_upstream_closed_in_time(upstream, left_at)
    record = only_record(db_path)
    assert_cut_by_client(record)
    assert record["attempts"] == 1
    assert record["stream"] == int(stream)
    # The request has ended (its record is written): anything that started for it would have reached the probe.
    assert [seen.model for seen in upstream.requests] == [f"{model}-1"]
    assert wait_until(lambda: len(upstream.requests) > 1, timeout=0.6) is False  # past first_byte_s


def test_leaving_during_a_retry_backoff_starts_no_further_attempt(
    make_config: Callable[..., GatewayConfig], probe: tuple[str, ProbeUpstream], db_path: Path
) -> None:
    probe_url, upstream = probe
    overrides = probe_overrides(probe_url)
    overrides["models"]["fail"] = {"deployments": [{"provider": "probe", "model": "fail-1"}], "fallbacks": ["spare"]}
    overrides["routing"]["backoff"] = {"base_s": 1.0, "max_s": 2.0}
    with running(make_config(**overrides)) as (url, _):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", chat("fail"), AUTH))
        assert wait_until(lambda: len(upstream.requests) == 1, timeout=5)  # failed, backing off >= 1 s (Retry-After)
        leave(sock)
        assert_cut_by_client(only_record(db_path))
    assert [seen.model for seen in upstream.requests] == ["fail-1"]


@pytest.mark.parametrize("then", ["retry", "fallback"])
def test_a_client_gone_before_a_retry_or_fallback_stops_the_request_there(
    make_config: Callable[..., GatewayConfig],
    probe: tuple[str, ProbeUpstream],
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    then: str,
) -> None:
    """Under a server that cannot tell the request of a disconnect at once (the gateway's own protocol's hook is
    hidden here, so the watch listens through receive(), and its sweep is held off), the first attempt fails after
    the client left but before its request listens: the router asks before the next attempt, and none starts."""
    monkeypatch.setattr(watch_module, "CONNECTION_KEY", "no such key")
    monkeypatch.setattr(watch_module, "LISTEN_AFTER_S", 60.0)
    probe_url, upstream = probe
    overrides = probe_overrides(probe_url)
    overrides["models"]["gated"] = {"deployments": [{"provider": "probe", "model": "gated-1"}], "fallbacks": ["spare"]}
    overrides["routing"]["retries"] = 1 if then == "retry" else 0
    with running(make_config(**overrides)) as (url, gateway):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", chat("gated"), AUTH))
        assert wait_until(lambda: len(upstream.requests) == 1, timeout=5)
        leave(sock)
        (watch,) = gateway.open_requests.watches
        cycle = watch._receive.__self__  # type: ignore[union-attr]  # uvicorn's: it knows the client has gone
        assert wait_until(lambda: cycle.disconnected, timeout=5)
        upstream.open_gates()
        assert_cut_by_client(only_record(db_path))
    assert [seen.model for seen in upstream.requests] == ["gated-1"]


class HeldFilter(pipeline.Stage):
    """A pipeline stage that waits until it is cancelled: a slow policy, guardrail or limiter."""

    name = "held"
    entered = 0
    cancelled = 0
    settled: ClassVar[list[int]] = []

    @classmethod
    def build(cls, components: Components) -> HeldFilter:
        return cls()

    async def on_request(self, ctx: RequestContext) -> None:
        HeldFilter.entered += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            HeldFilter.cancelled += 1
            raise

    async def on_response(self, ctx: RequestContext, reply: Any) -> None:
        HeldFilter.settled.append(reply.status)


def test_leaving_during_a_filter_cancels_it_and_settles_every_stage_entered(
    make_config: Callable[..., GatewayConfig],
    probe: tuple[str, ProbeUpstream],
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client leaves while a stage waits: the stage is cancelled, the stages entered see on_response (the
    concurrency slot of ratelimit comes back: the next request is served), no upstream is called."""
    monkeypatch.setitem(pipeline.FILTERS, "held", f"{__name__}:HeldFilter")
    monkeypatch.setattr(HeldFilter, "settled", [])
    monkeypatch.setattr(HeldFilter, "entered", 0)
    monkeypatch.setattr(HeldFilter, "cancelled", 0)
    probe_url, upstream = probe
    config = make_config(
        **probe_overrides(probe_url),
        pipeline=["auth", "ratelimit", "held", "route"],
        limits={"rules": [{"scope": "key", "concurrency": 1}]},
    )
    with running(config) as (url, gateway):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", chat("ok"), AUTH))
        assert wait_until(lambda: HeldFilter.entered == 1, timeout=5)
        leave(sock)
        assert wait_until(lambda: HeldFilter.cancelled == 1, timeout=CLOSE_DEADLINE_S)
        assert_cut_by_client(only_record(db_path))
        assert HeldFilter.settled == [499]
        # The concurrency slot of the request that left is free: a request passes ratelimit (and waits in held).
        second = connect(url)
        second.sendall(request_bytes("/v1/chat/completions", chat("ok"), AUTH))
        assert wait_until(lambda: HeldFilter.entered == 2, timeout=5)
        leave(second)
        assert wait_until(lambda: len(records(db_path)) == 2, timeout=10)
    assert upstream.requests == []


def test_a_whole_answer_is_unaffected_by_the_watch(proxied_probe, db_path: Path) -> None:
    """The watch ends with the request: keep-alive requests one after the other are each answered and recorded as
    200, none of them as a client that left (the server's own disconnect after a complete response)."""
    url, _, _ = proxied_probe
    sock = connect(url)
    for _ in range(3):
        sock.sendall(request_bytes("/v1/chat/completions", chat("ok"), AUTH))
        response = b""
        while b'"chatcmpl-probe"' not in response:
            response += sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200")
    sock.close()
    assert wait_until(lambda: len(records(db_path)) == 3, timeout=10)
    assert [r["status"] for r in records(db_path)] == [200, 200, 200]


def test_a_breaker_probe_whose_client_leaves_lets_the_next_request_probe(proxied_probe, db_path: Path) -> None:
    """A half-open breaker lets one probe through; a probe cancelled by its client says nothing of the deployment,
    and must not keep the slot (else the deployment would never be tried again)."""
    url, gateway, upstream = proxied_probe
    (health,) = [h for h in gateway.health.deployments.values() if h.deployment.model == "hang-1"]
    for _ in range(gateway.config.routing.breaker.consecutive_failures):
        health.breaker.record(False, time.monotonic())
    health.breaker.open_until = time.monotonic()  # the cooldown is over: the next request is the probe
    for expected in (1, 2):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", chat("hang"), AUTH))
        assert wait_until(lambda n=expected: len(upstream.requests) == n, timeout=5), upstream.requests
        leave(sock)
        assert wait_until(lambda n=expected: len(records(db_path)) == n, timeout=10)
    assert [seen.model for seen in upstream.requests] == ["hang-1", "hang-1"]  # not the fallback's
    assert [r["status"] for r in records(db_path)] == [499, 499]
    assert health.breaker.state == "half-open"


def test_leaving_after_the_upstream_was_called_keeps_the_token_reservation(
    make_config: Callable[..., GatewayConfig], probe: tuple[str, ProbeUpstream], db_path: Path
) -> None:
    """The upstream may bill a request its client left: the reservation stands, so leaving early is no way
    around a token limit. (Before the upstream is called, everything comes back: see the held-filter test.)"""
    probe_url, upstream = probe
    config = make_config(
        **probe_overrides(probe_url),
        pipeline=["auth", "ratelimit", "route"],
        limits={"default_completion_tokens": 1000, "rules": [{"scope": "key", "tpm": 1500}]},
    )
    with running(config) as (url, _):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", chat("hang"), AUTH))
        assert wait_until(lambda: len(upstream.requests) == 1, timeout=5)
        leave(sock)
        assert_cut_by_client(only_record(db_path))
        second = connect(url)
        second.sendall(request_bytes("/v1/chat/completions", chat("ok"), AUTH))
        assert second.recv(65536).startswith(b"HTTP/1.1 429")
        second.close()
    assert len(upstream.requests) == 1


def test_leaving_while_the_key_is_checked_calls_no_upstream(
    make_config: Callable[..., GatewayConfig], db_path: Path
) -> None:
    """The client leaves while its JWT's key is fetched from the JWKS (a slow identity provider): once the key is
    known good, the gateway finds the client gone before it reads a body or calls anything."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**orjson.loads(RSAAlgorithm.to_jwk(key.public_key())), "use": "sig", "alg": "RS256"}
    fetches: list[float] = []

    async def jwks(request: Request) -> Response:
        fetches.append(time.monotonic())
        if len(fetches) == 1:  # at start-up: not the key the token names yet
            return Response(orjson.dumps({"keys": [{**jwk, "kid": "old"}]}), media_type="application/json")
        await asyncio.sleep(0.5)
        return Response(orjson.dumps({"keys": [{**jwk, "kid": "new"}]}), media_type="application/json")

    with serve(Starlette(routes=[Route("/jwks.json", jwks)])) as issuer:
        jwt_config = {"jwks_url": f"{issuer}/jwks.json", "jwks_min_refresh_s": 0}
        with running(make_config(auth={"jwt": jwt_config})) as (url, gateway):
            token = jwt.encode({"sub": "ada", "exp": int(time.time()) + 60}, key, algorithm="RS256",
                               headers={"kid": "new"})  # fmt: skip
            sock = connect(url)
            sock.sendall(request_bytes("/v1/chat/completions", chat("demo"), {"authorization": f"Bearer {token}"}))
            assert wait_until(lambda: len(fetches) == 2, timeout=5)  # the unknown kid is being fetched
            leave(sock)
            assert_cut_by_client(only_record(db_path))
            assert gateway.providers["mock"].calls == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("idle_s", [5.0, 0.3])
def test_a_client_that_stops_reading_a_stream_is_disconnected_after_write_timeout_s(
    make_config: Callable[..., GatewayConfig], probe: tuple[str, ProbeUpstream], db_path: Path, idle_s: float
) -> None:
    """A client that keeps its connection but reads nothing: once its buffers are full the relay waits on it, and
    without a bound it would hold the request and the upstream stream for ever. After server.write_timeout_s of
    paused writes the gateway drops the connection: the record is 499 client_closed and the upstream is closed.
    The wait for the client is not the upstream's silence: a stream idle timeout shorter than write_timeout_s does
    not fire during it (the upstream would be blamed, stream_idle_timeout, for the client's stall)."""
    url, upstream = probe
    upstream.drip_interval_s = 0.0  # a chunk every loop step: the client's buffers fill in a moment
    overrides = probe_overrides(url)
    overrides["routing"]["timeouts"]["idle_s"] = idle_s
    with running(make_config(server={"write_timeout_s": 1.0}, **overrides)) as (gateway_url, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        host, port = gateway_url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        try:
            sock.sendall(request_bytes("/v1/chat/completions", chat("drip", stream=True), AUTH))
            # ... and nothing is read. The record comes when the gateway gives up on the client.
            record = only_record_within(db_path, timeout=60)
            assert_cut_by_client(record)
            assert record["stream"] == 1
            (seen,) = upstream.requests
            assert wait_until(lambda: upstream.connection_closed(seen.connection) is not None, timeout=10)
        finally:
            sock.close()


def only_record_within(db_path: Path, timeout: float) -> dict[str, Any]:
    assert wait_until(lambda: len(records(db_path)) >= 1, timeout=timeout), "no record"
    rows = records(db_path)
    assert len(rows) == 1, rows
    return rows[0]


def test_a_stream_to_a_client_that_stops_reading_holds_a_bounded_amount_and_is_recorded_once(
    make_config: Callable[..., GatewayConfig], probe: tuple[str, ProbeUpstream], db_path: Path
) -> None:
    """While a client reads nothing, the gateway stops reading its upstream (the upstream's own buffer grows: what
    the gateway holds is its socket buffers, not the stream), and after write_timeout_s the request ends once:
    one record, 499, the upstream closed, and no second record after."""
    url, upstream = probe
    upstream.drip_interval_s = 0.0
    upstream.drip_pad = 16_384  # 16 KB a chunk: the buffers between fill within a second
    with running(make_config(server={"write_timeout_s": 4.0}, **probe_overrides(url))) as (gateway_url, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = gateway_url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        try:
            sock.sendall(request_bytes("/v1/chat/completions", chat("drip", stream=True), AUTH))
            assert wait_until(lambda: max(upstream.backlog.values(), default=0) > 4_000_000, timeout=3.5), (
                f"the gateway went on reading its upstream: {upstream.backlog}"
            )
            record = only_record_within(db_path, timeout=60)
            assert_cut_by_client(record)
            (seen,) = upstream.requests
            assert wait_until(lambda: upstream.connection_closed(seen.connection) is not None, timeout=10)
            time.sleep(1.0)
            assert len(records(db_path)) == 1
        finally:
            sock.close()
