"""The Filter protocol and the Pipeline that runs filters in the order gateway.yaml names them.

Filters run forward on the request; the last one (`route`, the terminal stage) always answers by calling the
upstream. Any filter may answer earlier by returning a Reply, or refuse by raising a GatewayError. Then every
filter whose on_request ran sees on_response in reverse order, on success and error alike; for a stream that
happens once the stream has ended, so that usage is known. Each stage is timed into a span.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from gateway.context import RequestContext
from gateway.errors import GatewayError, InternalError
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.runtime import Gateway

logger = logging.getLogger("gateway")


class Filter(Protocol):
    """One stage of the request path, built once at start-up."""

    name: ClassVar[str]

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """None: go on. A Reply: answer now. Refuse by raising a GatewayError."""

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        """Reverse order, for the stages whose on_request ran. A Reply replaces the answer (not for streams)."""


@runtime_checkable
class ChunkFilter(Protocol):
    """A filter that also sees each streamed chunk (parsed), in reverse pipeline order."""

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Synchronous and cheap. Return the chunk (changed or not), or None to drop it."""


# name -> "module:Class", imported when a pipeline names it.
FILTERS: dict[str, str] = {
    "auth": "gateway.filters.auth:AuthFilter",
    "policy": "gateway.filters.policy:PolicyFilter",
    "ratelimit": "gateway.filters.ratelimit:RateLimitFilter",
    "guardrails": "gateway.filters.guardrails:GuardrailsFilter",
    "route": "gateway.filters.route:RouteFilter",
}
TERMINAL_FILTER = "route"


def build_filter(name: str, gateway: Gateway) -> Filter:
    module_name, _, class_name = FILTERS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    instance: Filter = cls(gateway)
    return instance


class Pipeline:
    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.chunk_filters: tuple[ChunkFilter, ...] = tuple(
            f for f in reversed(self.filters) if isinstance(f, ChunkFilter)
        )

    async def run(self, ctx: RequestContext, entered: list[Filter]) -> Reply:
        """Run the request phase, appending each stage to `entered` as it starts, for `complete`. The caller owns
        that list so that a request cancelled midway (its client left) still settles the stages it entered."""
        reply: Reply | None = None
        try:
            for stage in self.filters:
                entered.append(stage)
                start = time.perf_counter_ns()
                try:
                    reply = await stage.on_request(ctx)
                finally:
                    ctx.add_span(stage.name, start)
                if reply is not None:
                    break
        except GatewayError as exc:
            ctx.error = exc
            reply = Reply.from_error(exc)
        if reply is None:  # only when a pipeline has no terminal stage, which config checks forbid
            ctx.error = GatewayError("The pipeline produced no answer.")
            reply = Reply.from_error(ctx.error)
        return reply

    async def complete(self, ctx: RequestContext, reply: Reply, entered: list[Filter]) -> Reply:
        """The response phase, in reverse order. For a stream, called after it has ended."""
        for stage in reversed(entered):
            try:
                replaced = await stage.on_response(ctx, reply)
            except GatewayError as exc:
                ctx.error = exc
                replaced = Reply.from_error(exc)
            except Exception:  # a bug in one stage must not skip the others' settlement (a held rate-limit slot)
                logger.exception("%s.on_response failed for request %s", stage.name, ctx.request_id)
                ctx.error = InternalError()
                replaced = Reply.from_error(ctx.error)
            if replaced is not None and reply.stream is None:
                reply = replaced
        return reply
