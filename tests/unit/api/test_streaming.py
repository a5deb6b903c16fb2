"""The relay's writes: one per upstream read when the server is uvicorn's own cycle, the ASGI messages otherwise; and
its idle timeout, kept by one timer whatever the number of chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from gateway.api.streaming import relay
from gateway.context import RequestContext
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
