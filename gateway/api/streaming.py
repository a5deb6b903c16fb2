"""The relay of a streamed answer: chunk by chunk to the client, never buffered whole.

It records usage and the first token, removes the usage chunk the gateway asked for on the client's behalf,
runs the filters' on_chunk hooks, and ends every stream properly: an upstream that fails or goes silent for the
idle timeout ends the client's stream with an error event in OpenAI's shape and `[DONE]`, never a hang. A client
that disconnects, or the end of the shutdown's drain time, cancels the relay through the request's Watch
(gateway/api/watch.py), which closes the upstream request; a stream cut by the shutdown ends with an error
event (server_shutting_down) and `[DONE]` too.

What the client receives is written by an Encoder: OpenAI's SSE framing by default, or another wire format
(Anthropic's Messages events) that an ingress endpoint passes in. Tracking stays here, so it is the same for all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Protocol

import orjson

from gateway.context import RequestContext, Usage
from gateway.errors import (
    ClientClosed,
    GatewayError,
    InternalError,
    ServerShuttingDown,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.pipeline import Filter
from gateway.providers.sse import DONE, DONE_FRAME, frame
from gateway.server.protocol import chunk_writer, end_chunked
from gateway.server.watch import Watch
from gateway.types import Headers, Send

logger = logging.getLogger("gateway")

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Encoder(Protocol):
    """Writes the client's side of a relayed stream. Each method returns the bytes to send, framing included."""

    def chunk(self, payload: bytes, parsed: dict[str, Any] | None) -> bytes | None:
        """One upstream payload (after usage stripping and chunk filters), parsed when it is a JSON object.
        None: send nothing for it."""

    def error(self, exc: GatewayError) -> bytes:
        """The stream failed (upstream error, idle timeout, a bug): the last event before `end`."""

    def end(self) -> bytes:
        """The stream is over, whole or failed: the closing bytes, possibly empty."""


class OpenAIEncoder:
    """OpenAI's framing: each payload as it came in a `data:` event, errors in OpenAI's shape, then `[DONE]`."""

    __slots__ = ()

    def chunk(self, payload: bytes, parsed: dict[str, Any] | None) -> bytes | None:
        return frame(payload)

    def error(self, exc: GatewayError) -> bytes:
        return frame(exc.to_json())

    def end(self) -> bytes:
        return DONE_FRAME


OPENAI_ENCODER = OpenAIEncoder()


async def relay(
    ctx: RequestContext,
    stream: AsyncIterator[bytes],
    send: Send,
    watch: Watch,
    headers: Headers,
    chunk_filters: tuple[Filter, ...],
    idle_s: float,
    encoder: Encoder = OPENAI_ENCODER,
) -> None:
    """Send the stream to the client and end it: `[DONE]` (or the encoder's end), after an error event when it
    failed or was cut by the shutdown; nothing more when the client left. The upstream request is closed whenever
    the stream did not end by itself."""
    started = False
    error: GatewayError | None = None
    pending: list[bytes] = []  # what the last upstream read made, when the stream ended well: written with the end
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
        started = True
        ctx.status = 200
        ctx.completion_text = []
        error = await _forward(ctx, stream, send, chunk_filters, idle_s, encoder, pending)
    except asyncio.CancelledError:  # the client left, or the shutdown's drain time is over
        error = watch.absorb()
    finally:
        watch.hold()  # what is left is the stream's own ending: nothing to cancel it for
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()  # closes the upstream request when the stream did not end by itself
    if error is not None:
        ctx.error = error
        if isinstance(error, ClientClosed | ServerShuttingDown):
            ctx.status = error.status_code  # the record says how the stream ended, whatever status was sent
        if isinstance(error, ClientClosed):
            return  # nobody left to tell
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
        await send({"type": "http.response.body", "body": encoder.error(error), "more_body": True})
    watch.close()
    end = encoder.end()
    if pending:
        data = b"".join(pending)
        if end_chunked(send, data + end):  # the last read's events and the end in one write
            return
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": end, "more_body": False})


async def _forward(
    ctx: RequestContext,
    stream: AsyncIterator[bytes],
    send: Send,
    chunk_filters: tuple[Filter, ...],
    idle_s: float,
    encoder: Encoder,
    pending: list[bytes],
) -> GatewayError | None:
    """Send the stream's events; the error that ended it early, if one did (the relay sends it and the end).
    What the payloads of one upstream read make is written together (`pending`), when the stream must wait for
    the next read; when the stream ends well, what the last read made is left in `pending` for the relay."""
    strip_usage = not ctx.client_wants_usage
    loop = asyncio.get_running_loop()
    write = chunk_writer(send)  # uvicorn's own send: chunks written straight to the transport
    ended = False
    idle: _Idle | None = None
    try:
        async with asyncio.timeout(None) as deadline:
            idle = _Idle(loop, idle_s, deadline)
            next_payload = stream.__anext__
            while True:
                # The next payload, driven by hand to see whether the stream has it at once (the rest of the
                # upstream read in hand) or must wait for the upstream: then what is pending is written first.
                step = next_payload().__await__()  # an async generator's asend: itself
                try:
                    signal = step.send(None)
                except StopIteration as ready:
                    payload = ready.value
                except StopAsyncIteration:
                    break
                else:
                    if pending and write is not None and write(_joined(pending)):
                        pending.clear()
                    try:
                        payload = await _Resumed(step, signal)
                    except StopAsyncIteration:
                        break
                    if pending:
                        # Writes were paused: sent now, waiting for the drain, once the stream's step is over (a
                        # cut while that step is under way must go into it, or the generator is left running).
                        await idle.client(_write(pending, write, send))
                if payload == DONE:
                    break
                data = _process(ctx, payload, strip_usage, chunk_filters, encoder)
                if data:
                    if write is not None:
                        pending.append(data)
                    else:
                        await idle.client(send({"type": "http.response.body", "body": data, "more_body": True}))
                if ctx.error is not None:
                    break  # an error event of the upstream's (forwarded as it came), or a filter's
                idle.last = loop.time()
            if ctx.error is None:
                for data in _ending(ctx, chunk_filters, encoder):
                    if write is not None:
                        pending.append(data)
                    else:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
        ended = True
    except TimeoutError:
        return UpstreamTimeout(
            f"The upstream stream sent nothing for {idle_s:g} s.", provider=ctx.provider, code="stream_idle_timeout"
        )
    except GatewayError as exc:
        return exc
    except Exception:  # a bug in a provider or filter: the client still gets an error event and [DONE]
        logger.exception("stream of request %s failed", ctx.request_id)
        return InternalError("The gateway could not relay the upstream stream.")
    finally:
        if idle is not None:
            idle.cancel()
        if pending and not ended:  # the stream failed, or was cut: the read in hand goes before its error
            await _write(pending, write, send)
    return None


async def _write(pending: list[bytes], write: Callable[[bytes], bool] | None, send: Send) -> None:
    """The pending payloads' bytes, in one write when it can be made at once."""
    data = _joined(pending)
    pending.clear()
    if write is None or not write(data):
        await send({"type": "http.response.body", "body": data, "more_body": True})


def _joined(pending: list[bytes]) -> bytes:
    return pending[0] if len(pending) == 1 else b"".join(pending)


class _Resumed:
    """The rest of an awaitable whose first step was taken by hand (`signal`: what that step yielded, the future
    it waits on): awaited, it yields that up to the task, then drives the awaitable on as `await` would, passing
    in what the task sends and throws (a cancellation)."""

    __slots__ = ("step", "signal")

    def __init__(self, step: Any, signal: Any) -> None:
        self.step = step
        self.signal = signal

    def __await__(self) -> Generator[Any, Any, bytes]:
        signal = self.signal
        while True:
            try:
                value = yield signal
            except BaseException as exc:  # noqa: BLE001 - thrown into the awaitable, as await does
                try:
                    signal = self.step.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                signal = self.step.send(value)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _Idle:
    """The stream's idle timeout without a timer per chunk (a deadline rescheduled per chunk cancels one timer and
    makes another): each chunk notes its time in `last`, and one timer, due idle_s after the last chunk it knew of,
    looks when it fires. Silent for idle_s: the deadline expires at once; a chunk came since: due again idle_s after
    that one. It never expires before idle_s of silence, by the loop's clock, however early the timer fires."""

    __slots__ = ("loop", "idle_s", "deadline", "last", "handle", "on_client")

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_s: float, deadline: asyncio.Timeout) -> None:
        self.loop = loop
        self.idle_s = idle_s
        self.deadline = deadline
        self.last = loop.time()
        self.on_client = False  # waiting for the client to take what was written: not the upstream's silence
        self.handle: asyncio.TimerHandle | None = loop.call_at(self.last + idle_s + _SLACK_S, self._check)

    async def client(self, write: Awaitable[None]) -> None:
        """A write that waits for the client's drain: that time is not counted against the upstream (a client that
        reads nothing is the server's write_timeout_s to end, as client_closed, not a stream_idle_timeout)."""
        self.on_client = True
        try:
            await write
        finally:
            self.on_client = False
            self.last = self.loop.time()

    def _check(self) -> None:
        now = self.loop.time()
        due = now + self.idle_s if self.on_client else self.last + self.idle_s
        if now >= due:  # never before idle_s of silence, whatever the timer's precision
            self.handle = None
            self.deadline.reschedule(now)  # expires now: the stream is cancelled, and the timeout raised
        else:
            self.handle = self.loop.call_at(due + _SLACK_S, self._check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


# How late after its due time the timer is asked for: a loop's timer may fire before it (uvloop rounds a delay to
# the millisecond, and its clock is the millisecond's start), and an early check would be made again at once, and
# again, until the clock reaches the due time. A millisecond late, it finds the due time passed (the timeout ends at
# most ~1.5 ms after idle_s of silence, never before).
_SLACK_S = 0.001


def _ending(ctx: RequestContext, chunk_filters: tuple[Filter, ...], encoder: Encoder) -> list[bytes]:
    """What filters still hold when the upstream's stream ends (text a guardrail held back), as chunks."""
    out = []
    for stage in chunk_filters:
        for chunk in stage.on_stream_end(ctx):
            data = encoder.chunk(orjson.dumps(chunk), chunk)
            if data:
                out.append(data)
    return out


def _process(
    ctx: RequestContext,
    payload: bytes,
    strip_usage: bool,
    chunk_filters: tuple[Filter, ...],
    encoder: Encoder,
) -> bytes | None:
    """What to send for one upstream payload (None: nothing), noting usage, first token and errors."""
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return encoder.chunk(payload, None)
    if not isinstance(chunk, dict):
        return encoder.chunk(payload, None)
    error = chunk.get("error")
    if error:
        # An error event inside a 200 stream: recorded as an error, forwarded as it came.
        info = error if isinstance(error, dict) else {"message": str(error)}
        ctx.error = UpstreamRejected(
            str(info.get("message") or "The upstream stream failed."),
            status=502,
            provider=ctx.provider,
            error_type=info.get("type") if isinstance(info.get("type"), str) else None,
        )
        return encoder.chunk(payload, chunk)
    model = chunk.get("model")
    if model and model != ctx.served_model and isinstance(model, str):
        ctx.served_model = model  # what the upstream says served it, as for whole answers
    usage = chunk.get("usage")
    choices = chunk.get("choices")
    if usage:
        ctx.usage = Usage.from_openai(usage)
        if strip_usage and not choices:
            return None
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        # chat chunks carry delta.content (or tool calls); legacy completion chunks carry text
        content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if content and isinstance(content, str):
            if ctx.completion_text is not None:
                ctx.completion_text.append(content)
            if not ctx.first_token_ns:
                ctx.first_token_ns = time.perf_counter_ns()
        elif isinstance(delta, dict) and delta.get("tool_calls") and not ctx.first_token_ns:
            ctx.first_token_ns = time.perf_counter_ns()
    if chunk_filters:
        original = chunk
        for stage in chunk_filters:
            result = stage.on_chunk(ctx, chunk)
            if result is None:
                return None
            chunk = result
        if chunk is not original:
            return encoder.chunk(orjson.dumps(chunk), chunk)
    return encoder.chunk(payload, chunk)
