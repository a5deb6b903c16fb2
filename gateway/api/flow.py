"""The life of one request on a pipeline endpoint, the same for every ingress (OpenAI's, Anthropic's Messages).

    identify the caller from the headers ── read and parse the body ── pipeline ── answer whole, or relay the stream
                                                                     └── settle (the response phase) ── record

The key is checked before a byte of the body is read: a caller without a valid one costs the parse of its headers
(its answer closes the connection when the unread body is large, see `unread_body`). From then on the request is
watched (gateway/api/watch.py): a client that leaves, or the end of the shutdown's drain time, cancels whatever
the request waits on; the stages it entered still settle, and its record says how it ended. An ingress says how
its API reads a body and writes an answer; everything else is here, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.api.http import client_request_id, parse_json_object, read_body, whole_body
from gateway.api.streaming import Encoder, relay
from gateway.context import RequestContext
from gateway.errors import ClientClosed, GatewayError, InternalError
from gateway.ids import new_id
from gateway.pipeline import Filter
from gateway.reply import Reply
from gateway.types import Headers, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("gateway")

# Go's net/http draws the same line: an unread body up to this size is cheaper to read and discard (uvicorn does,
# once the answer is complete) than a new connection; beyond it, or of unknown size, the connection is closed.
DISCARD_LIMIT = 256 * 1024
CONNECTION_CLOSE = (b"connection", b"close")


class PipelineEndpoint:
    """A raw ASGI endpoint that runs the pipeline: its own last error guard (the app routes it past Starlette's
    error middleware). Subclasses give their API's parts: how a body is read, how an answer is written."""

    api: ClassVar[str] = ""  # the record's tags.api, when it is not OpenAI's

    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint  # ctx.endpoint: the canonical endpoint the pipeline serves
        self.max_body = int(gateway.config.server.max_body_mb * 1_048_576)

    # -- what an ingress gives -------------------------------------------------------------------------------------

    def request_headers(self, headers: Headers) -> Headers:
        """The headers the pipeline reads (the key among them)."""
        return headers

    async def parse(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        """The canonical body (OpenAI's format) and its bytes, from the request's JSON object and its bytes; a
        GatewayError when the body is not acceptable. The caller is known (ctx.principal): an ingress may read
        what the body refers to (the Responses API's previous_response_id, of the caller's project)."""
        raise NotImplementedError

    # parse_now is parse without a coroutine (an ingress whose parse never awaits says so).
    parses_now: ClassVar[bool] = False

    def parse_now(self, ctx: RequestContext, body: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        raise NotImplementedError

    def answer_now(self, ctx: RequestContext, reply: Reply, send: Send) -> bool:
        """`answer` without a coroutine when it can (uvicorn's send, an ordinary answer): True when sent; False
        when `answer` must be awaited (it sends the whole reply, as if this had not been called)."""
        return False

    async def answer(self, ctx: RequestContext, reply: Reply, send: Send) -> None:
        """Send a whole reply, an error's included (the pipeline's replies carry OpenAI's error JSON and ctx.error
        the error itself); set ctx.status to the status sent."""
        raise NotImplementedError

    def stream_headers(self, ctx: RequestContext, reply: Reply) -> Headers:
        raise NotImplementedError

    def encoder(self, ctx: RequestContext) -> Encoder:
        raise NotImplementedError

    # -- the request's life ----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter_ns()
        gateway = self.gateway
        client = scope.get("client")
        ctx = RequestContext(
            request_id=new_id(),
            endpoint=self.endpoint,
            headers=self.request_headers(scope["headers"]),
            raw_body=b"",
            body={},
            client_ip=client[0] if client else "",
            started_ns=started,
            client_request_id=client_request_id(scope),
        )
        if self.api:
            ctx.tags["api"] = self.api
        watch = gateway.open_requests.watch()
        gateway.metrics.requests_in_flight += 1
        entered: list[Filter] = []
        body_read = False
        try:
            try:
                for stage in gateway.pipeline.door:  # auth: the key, before a byte of the body is read
                    if not stage.identify_now(ctx):  # a known caller without a coroutine
                        await stage.identify(ctx)
                raw = whole_body(scope, receive, self.max_body)  # as it nearly always is: no await
                if raw is None:
                    raw = await read_body(scope, receive, self.max_body)
                body_read = True
                decoded = parse_json_object(raw)
                ctx.note_requested(decoded)  # a body refused below is still recorded with what it asked for
                if self.parses_now:  # a coroutine less
                    body, raw = self.parse_now(ctx, decoded, raw)
                else:
                    body, raw = await self.parse(ctx, decoded, raw)
                ctx.set_body(raw, body)
                watch.listen(receive, scope)
                ctx.watch = watch
                pipeline = gateway.pipeline
                ran = pipeline.run_now(ctx, entered)  # a hit's whole request phase, without a coroutine
                reply = await pipeline.run(ctx, entered, ran) if isinstance(ran, int) else ran
                if reply.stream is not None:
                    await relay(
                        ctx,
                        reply.stream,
                        send,
                        watch,
                        self.stream_headers(ctx, reply),
                        gateway.pipeline.chunk_filters,
                        gateway.idle_timeout_s(ctx),
                        self.encoder(ctx),
                    )
                    await gateway.pipeline.complete(ctx, reply, entered)
                    return
            except GatewayError as exc:  # refused before the pipeline: identification, body, validation
                ctx.error = exc
                reply = Reply.from_error(exc)
            except asyncio.CancelledError:  # the client left, or the shutdown's drain time is over
                ctx.error = watch.absorb()
                reply = Reply.from_error(ctx.error)
            watch.hold()
            if entered:
                settled = gateway.pipeline.complete_now(ctx, reply, entered)
                reply = await gateway.pipeline.complete(ctx, reply, entered) if settled is None else settled
            gone = watch.cut if isinstance(watch.cut, ClientClosed) else ctx.error
            if isinstance(gone, ClientClosed):  # nobody to answer; the record says why
                ctx.error = gone
                ctx.status = gone.status_code
                return
            if (not body_read and unread_body(scope["headers"])) or watch.cut is not None:
                reply.headers["connection"] = "close"
            watch.close()
            if not self.answer_now(ctx, reply, send):
                await self.answer(ctx, reply, send)
        except Exception:
            # A bug becomes a 500 in the ingress's shape, never a stack trace.
            logger.exception("unhandled error in %s, request %s", self.endpoint, ctx.request_id)
            ctx.error = InternalError()
            if not ctx.status:
                watch.close()
                await self.answer(ctx, Reply.from_error(ctx.error), send)
        finally:
            watch.close()
            gateway.metrics.requests_in_flight -= 1
            gateway.recorder.finish(ctx)
            if watch.foreign:
                raise asyncio.CancelledError  # the server's own cancellation, honoured once the request has ended


def unread_body(headers: Headers) -> bool:
    """Whether an answer sent before the body was read must close the connection: the client was told to wait
    for a 100 Continue it will never get (it sends no body, and the server would read its next request as one), or
    the body is too large, or of unknown size (chunked), to be worth reading and discarding."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit() or int(value) > DISCARD_LIMIT:
                return True
        elif name == b"transfer-encoding" or (name == b"expect" and value.lower() == b"100-continue"):
            return True
    return False
