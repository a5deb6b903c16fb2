"""The relay's writes: one per upstream read when the server is uvicorn's own cycle, the ASGI messages otherwise; and
its idle timeout, kept by one timer whatever the number of chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, strategies as st

from gateway.api.streaming import relay
from gateway.context import RequestContext
from gateway.errors import ClientClosed, GatewayError, ServerShuttingDown
from gateway.server.timing import TimedCycle
from gateway.server.watch import OpenRequests

pytestmark = pytest.mark.anyio


def payload(text: str) -> bytes:
    return orjson.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]})


def cycle(writes: list[bytes], *, paused: bool = False) -> TimedCycle:
    """uvicorn's request cycle as far as the relay's writes see it: the head written, a chunked body, POST."""
    made = TimedCycle.__new__(TimedCycle)
    made.__dict__.update(
        response_started=False,
        response_complete=False,
        disconnected=False,
        chunked_encoding=None,
        scope={"method": "POST"},
        flow=SimpleNamespace(write_paused=paused),
        keep_alive=True,
        transport=SimpleNamespace(write=writes.append),
        message_event=asyncio.Event(),
        on_response=lambda: None,
    )
    return made


def _unchunked(write: bytes) -> bytes:
    """The body bytes of one write of chunked framing (one chunk, maybe the last)."""
    size, _, rest = write.partition(b"\r\n")
    return rest[: int(size, 16)]


def sender(made: TimedCycle, messages: list[dict[str, Any]]) -> Any:
    """A bound method of the cycle (what chunk_writer looks for) that records the ASGI messages it gets."""

    async def send(self: TimedCycle, message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.start":
            self.response_started = True
            self.chunked_encoding = True

    return send.__get__(made)


async def reads(*groups: list[bytes], wait_s: float = 0.0) -> AsyncIterator[bytes]:
    """The payloads of each group as one upstream read: the next group only after a wait."""
    for i, group in enumerate(groups):
        if i:
            await asyncio.sleep(wait_s)
        for item in group:
            yield item


async def relayed(stream: AsyncIterator[bytes], send: Any, idle_s: float = 5.0) -> RequestContext:
    ctx = RequestContext(request_id="r" * 32, endpoint="chat/completions", headers=[], raw_body=b"", body={})
    ctx.client_wants_usage = True
    await relay(ctx, stream, send, OpenRequests().watch(), [], (), idle_s)
    return ctx


async def test_the_payloads_of_one_read_go_out_in_one_write() -> None:
    writes: list[bytes] = []
    messages: list[dict[str, Any]] = []
    made = cycle(writes)
    stream = reads([payload("a"), payload("b"), payload("c")], [payload("d")], [payload("e"), b"[DONE]"])
    ctx = await relayed(stream, sender(made, messages))
    events = [b"data: %s\n\n" % payload(t) for t in "abcde"]
    last = events[4] + b"data: [DONE]\n\n"  # the last read's events and the end: one write, the body's last chunk
    assert writes == [
        *(b"%x\r\n%s\r\n" % (len(data), data) for data in (b"".join(events[:3]), events[3])),
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last),
    ]
    assert [m["type"] for m in messages] == ["http.response.start"]
    assert made.response_complete
    assert made.message_event.is_set()
    assert ctx.completion_text == list("abcde")


async def test_paused_writes_go_through_the_asgi_send() -> None:
    writes: list[bytes] = []
    messages: list[dict[str, Any]] = []
    await relayed(reads([payload("a"), payload("b")], [payload("c")]), sender(cycle(writes, paused=True), messages))
    assert writes == []
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    assert bodies == [b"data: %s\n\ndata: %s\n\n" % (payload("a"), payload("b")), b"data: %s\n\n" % payload("c"),
                      b"data: [DONE]\n\n"]  # fmt: skip


async def test_another_servers_send_gets_a_message_per_payload() -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await relayed(reads([payload("a"), payload("b")], [payload("c")]), send)
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    assert bodies == [b"data: %s\n\n" % payload(t) for t in "abc"] + [b"data: [DONE]\n\n"]


async def test_payloads_already_read_go_out_before_the_error_that_ends_the_stream() -> None:
    writes: list[bytes] = []
    messages: list[dict[str, Any]] = []

    async def failing() -> AsyncIterator[bytes]:
        yield payload("a")
        yield payload("b")
        raise ValueError("a bug in a provider")

    ctx = await relayed(failing(), sender(cycle(writes), messages))
    assert writes == [
        b"%x\r\n%s\r\n" % (len(d), d) for d in [b"data: %s\n\ndata: %s\n\n" % (payload("a"), payload("b"))]
    ]
    assert ctx.error is not None
    assert [m["body"][:13] for m in messages[1:]] == [b'data: {"error', b"data: [DONE]\n"]


@pytest.mark.parametrize("chunks", [0, 1, 30])
async def test_a_stream_silent_for_the_idle_time_ends_with_a_timeout(chunks: int) -> None:
    messages: list[dict[str, Any]] = []

    async def then_silent() -> AsyncIterator[bytes]:
        for i in range(chunks):
            await asyncio.sleep(0.002)
            yield payload(str(i))
        await asyncio.sleep(3600)
        yield b"[DONE]"

    loop = asyncio.get_running_loop()
    started = loop.time()
    ctx = await relayed(then_silent(), sender(cycle([]), messages), idle_s=0.1)
    assert ctx.error is not None
    assert ctx.error.code == "stream_idle_timeout"
    assert loop.time() - started >= 0.1 + chunks * 0.002
    assert len(loop._scheduled) < 5  # type: ignore[attr-defined]  # no timer left per chunk


async def test_chunks_that_keep_coming_within_the_idle_time_are_never_cut() -> None:
    messages: list[dict[str, Any]] = []

    async def steady() -> AsyncIterator[bytes]:
        for i in range(12):
            await asyncio.sleep(0.02)  # 0.24 s in all, more than twice the idle time
            yield payload(str(i))
        yield b"[DONE]"

    ctx = await relayed(steady(), sender(cycle([]), messages), idle_s=0.1)
    assert ctx.error is None
    assert ctx.completion_text == [str(i) for i in range(12)]


class _Stalled:
    """A stream whose first read gives two payloads and whose second never comes; says when it waits, and when it
    was closed."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.closed = asyncio.Event()

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            yield payload("a")
            yield payload("b")
            self.waiting.set()
            await asyncio.Future()  # the upstream's next read, that never comes
            yield b"[DONE]"
        finally:
            self.closed.set()


def slow_client(made: TimedCycle, messages: list[dict[str, Any]], drained: asyncio.Event | None) -> Any:
    """uvicorn's send to a client that reads nothing for now: a body waits for the drain while writes are paused
    (drained None: a slow client, that drains a loop step later), and returns at once once the client is gone."""

    async def send(self: TimedCycle, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
            self.chunked_encoding = True
        elif self.disconnected:
            return
        elif self.flow.write_paused:
            await (asyncio.sleep(0) if drained is None else drained.wait())
        messages.append(message)

    return send.__get__(made)


@pytest.mark.parametrize("how", ["idle_timeout", "client_left", "shutdown_cut"])
async def test_a_stream_cut_while_a_read_waits_for_a_paused_client_is_closed(how: str) -> None:
    """The stream's next step is taken by hand before the last read's payloads are written: a cut (the idle time,
    the client leaving, the shutdown) while those wait for a client that does not read must go into that step and
    close the stream, not leave its generator running (aclose(): asynchronous generator is already running)."""
    messages: list[dict[str, Any]] = []
    drained = asyncio.Event()
    upstream = _Stalled()
    made = cycle([], paused=True)
    ctx = RequestContext(request_id="r" * 32, endpoint="chat/completions", headers=[], raw_body=b"", body={})
    ctx.client_wants_usage = True
    requests = OpenRequests()

    async def run() -> None:
        watch = requests.watch()
        idle_s = 0.05 if how == "idle_timeout" else 3600.0
        await relay(ctx, upstream.stream(), slow_client(made, messages, drained), watch, [], (), idle_s)

    task = asyncio.ensure_future(run())
    await upstream.waiting.wait()
    if how == "client_left":  # as uvicorn's connection_lost: the cycle disconnected, writes resumed
        made.disconnected = True
        drained.set()
    if how != "idle_timeout":
        (watch,) = requests.watches
        watch.stop(ClientClosed() if how == "client_left" else ServerShuttingDown())
    closed = asyncio.ensure_future(upstream.closed.wait())
    await asyncio.wait([task, closed], return_when=asyncio.FIRST_COMPLETED)
    made.flow.write_paused = False  # the client reads again: what the relay still has goes out
    drained.set()
    await task  # the relay ends by itself: no RuntimeError from the stream's aclose
    assert upstream.closed.is_set()
    assert ctx.error is not None
    if how == "idle_timeout":
        assert ctx.error.code == "stream_idle_timeout"
    else:
        assert isinstance(ctx.error, ClientClosed if how == "client_left" else ServerShuttingDown)
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    if how == "client_left":
        assert bodies == []
    else:  # the read in hand, then the error, then the end
        assert bodies[0] == b"data: %s\n\ndata: %s\n\n" % (payload("a"), payload("b"))
        assert bodies[1].startswith(b'data: {"error"')
        assert bodies[2:] == [b"data: [DONE]\n\n"]


@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("how", ["client_left", "shutdown_cut", "upstream_reset", "idle_timeout"])
@pytest.mark.parametrize("at", range(7))
async def test_a_stream_ended_at_any_moment_ends_once_and_leaves_nothing_behind(
    at: int, how: str, paused: bool
) -> None:
    """Reads of two payloads; before read `at` (0: before the first) the stream is cut, fails or goes silent, with
    the client reading at once or slowly (writes paused, each drained a loop step later): the relay ends by itself,
    the stream is closed, the payloads read before go out in order and once, the end once (none when the client
    left), and no task or timer of the relay's is left."""
    from gateway.errors import UpstreamUnavailable

    messages: list[dict[str, Any]] = []
    made = cycle([], paused=paused)
    made.transport.write = lambda w: messages.append({"type": "http.response.body", "body": _unchunked(w)})
    closed = asyncio.Event()
    requests = OpenRequests()
    loop = asyncio.get_running_loop()

    async def stream() -> AsyncIterator[bytes]:
        try:
            for i in range(at):
                await asyncio.sleep(0)  # a read
                yield payload(f"{i}a")
                yield payload(f"{i}b")
            if how == "upstream_reset":
                raise UpstreamUnavailable("reset mid-stream")
            if how in ("client_left", "shutdown_cut"):
                (watch,) = requests.watches
                if how == "client_left":
                    made.disconnected = True  # as uvicorn's connection_lost: writes resumed
                watch.stop(ClientClosed() if how == "client_left" else ServerShuttingDown())
            await asyncio.Future()  # silent, or cut here
            yield b"[DONE]"
        finally:
            closed.set()

    ctx = RequestContext(request_id="r" * 32, endpoint="chat/completions", headers=[], raw_body=b"", body={})
    ctx.client_wants_usage = True
    tasks = asyncio.all_tasks()

    async def run() -> None:
        idle_s = 0.02 if how == "idle_timeout" else 3600.0
        await relay(ctx, stream(), slow_client(made, messages, None), requests.watch(), [], (), idle_s)

    await asyncio.ensure_future(run())
    assert closed.is_set()
    assert asyncio.all_tasks() == tasks
    assert not [h for h in loop._scheduled if not h.cancelled() and "_Idle" in repr(h)]  # type: ignore[attr-defined]
    expected_error = {"client_left": ClientClosed, "shutdown_cut": ServerShuttingDown}.get(how, GatewayError)
    assert isinstance(ctx.error, expected_error)
    sent = b"".join(m["body"] for m in messages if m["type"] == "http.response.body")  # in order, both ways
    events = [e for e in sent.split(b"\n\n") if e]
    data = [b"data: " + payload(f"{i}{s}") for i in range(at) for s in "ab"]
    if how == "client_left":
        assert events == data[: len(events)]  # what went out before the client left, nothing after
    else:
        assert events[: len(data)] == data
        assert events[len(data)].startswith(b'data: {"error"')
        assert events[len(data) + 1 :] == [b"data: [DONE]"]


class _VirtualLoop:
    """A loop's clock and timers in virtual time, whose timers fire early by up to `early_s` (uvloop fires one up
    to half a millisecond before its time: it rounds the delay to the millisecond)."""

    def __init__(self, draws: Any, early_s: float) -> None:
        self.now = 0.0
        self.draws = draws
        self.early_s = early_s
        self.timers: list[tuple[float, Any]] = []
        self.fired = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Any:
        entry = (when, callback)
        self.timers.append(entry)
        return SimpleNamespace(cancel=lambda: self.timers.remove(entry) if entry in self.timers else None)

    def next_fire(self) -> float:
        when = self.timers[0][0]
        return max(self.now, when - self.draws.draw(st.floats(0.0, self.early_s)))

    def fire(self, at: float) -> None:
        self.now = at
        self.fired += 1
        self.timers.pop(0)[1]()


@given(
    draws=st.data(),
    idle_s=st.sampled_from([0.005, 0.02, 1.0, 30.0]),
    gaps=st.lists(st.floats(0.0, 2.0), max_size=12),
    early_s=st.sampled_from([0.0, 0.0005, 0.0009]),
)
def test_idle_never_ends_a_stream_before_idle_s_of_silence(
    draws: Any, idle_s: float, gaps: list[float], early_s: float
) -> None:
    """Whatever the chunks' times and however early the loop's timers fire (within a millisecond), the idle timeout
    expires no sooner than idle_s after the last chunk, by the loop's clock, and at most a couple of milliseconds
    after; and its timer fires a bounded number of times (no spin while the clock catches up)."""
    from gateway.api.streaming import _Idle

    loop = _VirtualLoop(draws, early_s)
    expired: list[float] = []
    idle = _Idle(loop, idle_s, SimpleNamespace(reschedule=expired.append))  # type: ignore[arg-type]
    arrivals = [sum(g * idle_s for g in gaps[: i + 1]) for i in range(len(gaps))]
    while not expired:
        fire = loop.next_fire()
        if arrivals and arrivals[0] < fire:
            loop.now = arrivals.pop(0)
            idle.last = loop.now  # a chunk
            continue
        loop.fire(fire)
    assert expired[0] >= idle.last + idle_s
    assert expired[0] <= idle.last + idle_s + 0.002
    assert loop.fired <= len(gaps) + 2
