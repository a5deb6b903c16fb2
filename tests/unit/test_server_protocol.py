"""The head cap of gateway/server/protocol.py, driven byte by byte: whatever the size of a head and however the
client's bytes are split into reads, a head over max_header_bytes gets 431 and one within it is served, on every
request of a kept-alive connection."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE
from uvicorn.server import ServerState

from gateway.server.protocol import (
    _NAME_REFUSED,
    _VALUE_REFUSED,
    SWEEP_SLICE,
    BoundedHttpToolsProtocol,
    EdgeLimits,
    _Sweep,
    body_received,
    send_whole,
)


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"%d" % size
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


def untimed(written: bytes) -> bytes:
    """What was written, with each answer's x-response-time (which differs from one run to the next) as `T`;
    every answer has one."""
    timed, count = re.subn(rb"\r\nx-response-time: \d+\.\d{3}ms\r\n", b"\r\nx-response-time: T\r\n", written)
    assert count == written.count(b"HTTP/1.1 ") - written.count(b"HTTP/1.1 100 Continue"), written
    return timed


def request(head_size: int, body: bytes) -> bytes:
    """A request whose head (request line to the blank line included) is exactly head_size bytes."""
    start = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\nx-fill: " % len(body)
    fill = head_size - len(start) - 4
    assert fill >= 0
    return start + b"f" * fill + b"\r\n\r\n" + body


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 4))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def serve_one_connection(requests: list[bytes], cap: int, rng: random.Random) -> list[bytes]:
    """Send each request after the previous answer, on one connection; return the status lines received."""
    config = Config(echo_length, lifespan="off", log_level="critical")
    state = ServerState()
    protocol = BoundedHttpToolsProtocol(config, state, {}, limits=EdgeLimits(max_header_bytes=cap))
    transport = Transport()
    protocol.connection_made(transport)
    statuses: list[bytes] = []
    for raw in requests:
        before = len(transport.written)
        for piece in splits(raw, rng):
            protocol.data_received(piece)
            if transport.closing:
                break
        for _ in range(50):  # let the app answer
            if len(transport.written) > before:
                break
            await asyncio.sleep(0)
        statuses.append(bytes(transport.written[before:]).split(b"\r\n", 1)[0])
        if not statuses[-1].startswith(b"HTTP/1.1 200"):
            break
    protocol.connection_lost(None)
    return statuses


@pytest.mark.parametrize("seed", range(40))
def test_a_head_is_served_up_to_the_cap_and_refused_past_it_however_its_bytes_are_split(seed):
    rng = random.Random(seed)
    cap = rng.choice([1024, 1500, 4096])
    heads = [
        rng.choice([cap - rng.randint(0, 3), cap + rng.randint(1, 3), rng.randint(200, cap * 3)]) for _ in range(4)
    ]
    bodies = [rng.randbytes(rng.choice([0, 10, cap * 2])) for _ in heads]
    statuses = asyncio.run(serve_one_connection([request(h, b) for h, b in zip(heads, bodies, strict=True)], cap, rng))
    expected: list[bytes] = []
    for head in heads:  # the first head past the cap ends the connection
        expected.append(b"HTTP/1.1 431 Request Header Fields Too Large" if head > cap else b"HTTP/1.1 200 OK")
        if head > cap:
            break
    assert statuses == expected, (cap, heads)


ANSWERS = [
    (200, [(b"content-type", b"application/json"), (b"x-request-id", b"abc")], b'{"ok":true}'),
    (429, [(b"content-type", b"application/json"), (b"retry-after", b"1")], b""),
    (200, [(b"x-gateway-model", b"bad\r\nvalue")], b"x"),  # refused by uvicorn: not sent whole
    (200, [(b"X-Upper", b"1")], b"x"),  # lower-cased by uvicorn
    (200, [(b"content-length", b"1")], b"x"),  # framed by the app
    (200, [(b"connection", b"close")], b"x"),
]


async def answer_both_ways(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> list[Any]:
    """The bytes written and the cycle's state after an answer through uvicorn's send, then through send_whole
    (falling back to uvicorn's send as send_json does), on two connections served alike."""
    outcomes: list[Any] = []
    for whole in (False, True):
        sent: dict[str, Any] = {}

        async def app(scope: Any, receive: Any, send: Any, whole: bool = whole, sent: dict[str, Any] = sent) -> None:
            try:
                sent["whole"] = whole and send_whole(send, status, headers, body)
                if not sent["whole"]:
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
            except RuntimeError as exc:
                sent["error"] = str(exc)
                raise
            sent["cycle"] = send.__self__

        config = Config(app, lifespan="off", log_level="critical", access_log=False)
        state = ServerState()
        state.default_headers = [(b"date", b"Mon, 07 Dec 2026 03:00:00 GMT")]
        protocol = BoundedHttpToolsProtocol(config, state, {}, limits=EdgeLimits())
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        for _ in range(50):
            await asyncio.sleep(0)
        cycle = sent.get("cycle")
        flags = (cycle.response_started, cycle.response_complete, cycle.chunked_encoding) if cycle else None
        written = untimed(bytes(transport.written))
        outcomes.append((written, sent.get("error"), flags, transport.closing, state.total_requests))
        protocol.connection_lost(None)
    outcomes.append(sent["whole"])
    return outcomes


@pytest.mark.parametrize("answer", ANSWERS)
def test_a_whole_answer_is_sent_as_uvicorns_send_would(answer):
    through_send, whole, sent_whole = asyncio.run(answer_both_ways(*answer))
    assert whole == through_send
    assert sent_whole == (answer in ANSWERS[:2])  # the others went through uvicorn's send


@pytest.mark.parametrize("seed", range(30))
def test_a_whole_answer_is_sent_as_uvicorns_send_would_the_first_time_and_again(seed):
    """send_whole's checks of the names are made once per join of them: the same answer a second time (the names
    found acceptable, or not, before), and one whose names join to the same bytes differently split, are sent as
    uvicorn's send would, byte for byte, and through send_whole exactly when the names are acceptable."""
    rng = random.Random(seed)
    pool = [b"x-a", b"x-b", b"content-type", b"X-Up", b"x y", b"connection", b"content-length", b"x-c\x01", b"ok"]
    headers = [(rng.choice(pool), rng.choice([b"1", b"v\x7f", b"a b"])) for _ in range(rng.randint(1, 4))]
    first = asyncio.run(answer_both_ways(200, headers, b"x"))
    again = asyncio.run(answer_both_ways(200, headers, b"x"))
    assert first[0] == first[1]
    assert again == first
    names = b"".join(name for name, _ in headers)
    resplit = [(names[:1], b"1"), (names[1:], b"2")]
    through_send, whole, sent_whole = asyncio.run(answer_both_ways(200, resplit, b"x"))
    assert whole == through_send
    # What the names' checks decide, from the join alone (values b"1", b"2" pass theirs).
    lowered_or_refused = any(HEADER_RE.search(bytes([c])) or bytes([c]).lower() != bytes([c]) for c in names)
    framing = any(word in names for word in (b"content-length", b"transfer-encoding", b"connection"))
    assert sent_whole == (not lowered_or_refused and not framing)


def test_send_whole_refuses_the_header_bytes_uvicorns_send_refuses_or_lowers():
    """Byte by byte: what send_whole's tables delete is what uvicorn's expressions find (and, in a name, upper case,
    which uvicorn lower-cases)."""
    for code in range(256):
        byte = bytes([code])
        refused_name = HEADER_RE.search(byte) is not None or byte.lower() != byte
        assert refused_name == (byte.translate(None, _NAME_REFUSED) != byte), code
        assert (HEADER_VALUE_RE.search(byte) is not None) == (byte.translate(None, _VALUE_REFUSED) != byte), code


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n{}",  # half of it: received as usual
        b"POST /x HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}",
    ],
)
def test_a_whole_body_is_taken_as_uvicorns_receive_would(raw):
    async def both_ways() -> list[Any]:
        outcomes: list[Any] = []
        for whole in (False, True):
            seen: dict[str, Any] = {}

            async def app(
                scope: Any, receive: Any, send: Any, whole: bool = whole, seen: dict[str, Any] = seen
            ) -> None:
                body = body_received(receive) if whole else None
                seen["whole"] = body is not None
                if body is None:
                    message = await receive()
                    body = message["body"]
                cycle = receive.__self__
                seen["state"] = (body, bytes(cycle.body), cycle.message_event.is_set(), cycle.more_body)
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b""})

            config = Config(app, lifespan="off", log_level="critical", access_log=False)
            protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits())
            transport = Transport()
            protocol.connection_made(transport)
            protocol.data_received(raw)
            for _ in range(50):
                await asyncio.sleep(0)
            if "state" not in seen:  # waiting for the rest of its body
                protocol.data_received(b"{}")
                for _ in range(50):
                    await asyncio.sleep(0)
            outcomes.append((seen["state"], untimed(bytes(transport.written)), transport.reading))
            protocol.connection_lost(None)
        outcomes.append(seen["whole"])
        return outcomes

    through_receive, whole, taken = asyncio.run(both_ways())
    assert whole == through_receive
    assert taken == (b"content-length: 4" not in raw and b"expect" not in raw)


def test_uvicorns_own_500_is_timed_from_the_head():
    """An app that fails before it answers gets uvicorn's 500, through the cycle's send: timed like any answer."""

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.02)
        raise RuntimeError("a bug")

    async def serve() -> bytes:
        config = Config(failing, lifespan="off", log_level="critical", access_log=False)
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits())
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        for _ in range(100):
            if transport.written:
                break
            await asyncio.sleep(0.005)
        protocol.connection_lost(None)
        return bytes(transport.written)

    written = asyncio.run(serve())
    assert written.startswith(b"HTTP/1.1 500 ")
    took = re.search(rb"\r\nx-response-time: (\d+\.\d{3})ms\r\n", written)
    assert took is not None
    assert float(took[1]) >= 20


def test_an_idle_kept_alive_connection_is_closed_by_the_sweep_after_keep_alive_s():
    """No timer per request: once answered, the connection notes when it went idle, and the sweep closes it after
    keep_alive_s without a byte of the next request; a request that comes in time is served, and idles anew."""

    async def serve() -> list[Any]:
        config = Config(echo_length, lifespan="off", log_level="critical", access_log=False)
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits(keep_alive_s=5.0))
        transport = Transport()
        protocol.connection_made(transport)
        seen = []
        for _ in range(2):
            before = len(transport.written)
            protocol.data_received(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            for _ in range(50):
                await asyncio.sleep(0)
            assert len(transport.written) > before
            assert protocol.timeout_keep_alive_task is None  # uvicorn's timer was not armed
            idle_since = protocol.phase_since
            protocol.check_deadline(idle_since + 4.9)
            seen.append(transport.closing)
        protocol.check_deadline(idle_since + 5.0)
        seen.append(transport.closing)
        protocol.connection_lost(None)
        return seen

    assert asyncio.run(serve()) == [False, False, True]


def test_the_sweep_checks_every_connection_a_slice_per_loop_step():
    """With many connections open, one step of the sweep checks at most SWEEP_SLICE of them (a pass over thousands
    would hold the loop for milliseconds); the others are checked in the steps that follow, and the sweep ticks on."""

    class Connection(BoundedHttpToolsProtocol):
        def __init__(self, log: list[tuple[int, int]], step: list[int], index: int) -> None:
            self.log, self.step, self.index = log, step, index

        def check_deadline(self, now: float) -> None:
            self.log.append((self.step[0], self.index))

    async def sweep() -> tuple[list[tuple[int, int]], bool]:
        loop = asyncio.get_running_loop()
        log: list[tuple[int, int]] = []
        step = [0]
        state = ServerState()
        count = 2 * SWEEP_SLICE + 5
        state.connections.update(Connection(log, step, i) for i in range(count))
        sweep = _Sweep(loop, state.connections, tick_s=3600)
        _Sweep._running[state] = sweep
        sweep.run(state)
        while len(log) < count:
            step[0] += 1
            await asyncio.sleep(0)  # one loop step: the next slice runs
        ticking = any(handle._callback == sweep.run for handle in loop._scheduled)  # type: ignore[attr-defined]
        return log, ticking

    log, ticking = asyncio.run(sweep())
    assert sorted(index for _, index in log) == list(range(2 * SWEEP_SLICE + 5))  # each connection once
    per_step: dict[int, int] = {}
    for step, _ in log:
        per_step[step] = per_step.get(step, 0) + 1
    assert list(per_step.values()) == [SWEEP_SLICE, SWEEP_SLICE, 5]
    assert ticking  # the next pass is due a tick later


def test_a_refused_connection_whose_peer_is_gone_is_closed_without_an_error():
    """asyncio's own transport shuts the socket down in write_eof(): a peer already gone makes it raise. The
    refusal past max_connections must then close the connection, not fail in connection_made."""

    class GoneTransport(Transport):
        def write_eof(self) -> None:
            raise OSError(107, "Transport endpoint is not connected")

    async def refuse() -> GoneTransport:
        config = Config(echo_length, lifespan="off", log_level="critical", access_log=False)
        state = ServerState()
        state.connections.update(object() for _ in range(2))  # already at the cap
        protocol = BoundedHttpToolsProtocol(config, state, {}, limits=EdgeLimits(max_connections=2))
        transport = GoneTransport()
        protocol.connection_made(transport)
        return transport

    transport = asyncio.run(refuse())
    assert transport.written.startswith(b"HTTP/1.1 503 ")
    assert transport.closing


def test_a_client_that_reads_nothing_for_write_timeout_s_is_disconnected():
    """Writes paused (the client's buffers full) for write_timeout_s: the sweep aborts the connection (close() would
    wait to send the buffer first), whatever the phase; paused for less, or resumed since, it is left alone."""

    async def sweep(paused_for: float, resumed: bool) -> Transport:
        config = Config(echo_length, lifespan="off", log_level="critical", access_log=False)
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits(write_timeout_s=10.0))
        transport = Transport()
        protocol.connection_made(transport)
        protocol.pause_writing()
        if resumed:
            protocol.resume_writing()
        protocol.check_deadline(protocol.write_paused_since + paused_for)
        return transport

    assert asyncio.run(sweep(10.0, resumed=False)).aborted
    assert not asyncio.run(sweep(9.9, resumed=False)).closing
    assert not asyncio.run(sweep(10.0, resumed=True)).closing
