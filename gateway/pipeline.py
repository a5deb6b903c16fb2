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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gateway.config import ConfigError
from gateway.context import RequestContext
from gateway.errors import GatewayError, InternalError
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components

logger = logging.getLogger("gateway")


class Filter(Protocol):
    """One stage of the request path, built once at start-up by its class's `build` from the gateway's components.

    Every hook is declared here; `Stage` gives each a no-op default, and a filter says which optional ones it uses
    with class attributes, so that the pipeline never looks for them (`sees_chunks`, `at_door`). A filter declares
    the stages it needs before it: `requires` (the pipeline must name them, earlier), `after` (earlier, when the
    pipeline names them). The pipeline checks the order when it is built (`pipeline_problems`).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    after: ClassVar[tuple[str, ...]]
    order_note: ClassVar[str]  # why, for the error that says the order is wrong
    terminal: ClassVar[bool]  # it always answers (calls the upstream): the last stage, and only such a stage
    sees_chunks: ClassVar[bool]  # on_chunk and on_stream_end are called for a streamed answer
    at_door: ClassVar[bool]  # identify is called before the body is read

    @classmethod
    def build(cls, components: Components) -> Filter:
        """The filter, from the components it uses (and its config section, from components.config)."""
        ...

    async def identify(self, ctx: RequestContext) -> None:
        """Before the body is read (for `at_door` filters): who is calling, from the headers alone."""

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """None: go on. A Reply: answer now. Refuse by raising a GatewayError."""

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        """Reverse order, for the stages whose on_request ran. A Reply replaces the answer (not for streams)."""

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Each streamed chunk (parsed), in reverse pipeline order, for `sees_chunks` filters. Synchronous and
        cheap. Return the chunk (changed or not), or None to drop it."""

    def on_stream_end(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The upstream's stream has ended well: chunks still to send (text held back), for `sees_chunks`."""

    async def close(self) -> None:
        """At shutdown, for what the filter itself holds (components are closed by their owner)."""


class Stage:
    """No-op defaults for every optional part of the Filter protocol: a filter subclasses it and overrides what
    it uses (setting the class attribute that says so)."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()
    order_note: ClassVar[str] = ""
    terminal: ClassVar[bool] = False
    sees_chunks: ClassVar[bool] = False
    at_door: ClassVar[bool] = False

    async def identify(self, ctx: RequestContext) -> None:
        return None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        return None

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        return None

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None


# name -> "module:Class", imported when a pipeline names it.
FILTERS: dict[str, str] = {
    "auth": "gateway.filters.auth:AuthFilter",
    "policy": "gateway.filters.policy:PolicyFilter",
    "ratelimit": "gateway.filters.ratelimit:RateLimitFilter",
    "guardrails": "gateway.filters.guardrails:GuardrailsFilter",
    "route": "gateway.filters.route:RouteFilter",
}


def filter_class(name: str) -> type[Filter]:
    module_name, _, class_name = FILTERS[name].partition(":")
    cls: type[Filter] = getattr(importlib.import_module(module_name), class_name)
    return cls


def pipeline_problems(names: Sequence[str]) -> list[tuple[str, str]]:
    """What is wrong with a pipeline list, as (key path, problem) in gateway.yaml: unknown or repeated filters, a
    last stage that does not answer, a stage before what it needs. Empty when it can be built."""
    problems: list[tuple[str, str]] = []
    classes: dict[str, type[Filter]] = {}
    for i, name in enumerate(names):
        if name not in FILTERS:
            problems.append((f"pipeline[{i}]", f"unknown filter {name!r} (known: {', '.join(sorted(FILTERS))})"))
        else:
            classes[name] = filter_class(name)
    if len(set(names)) != len(names):
        problems.append(("pipeline", "a filter is named twice"))
    if not names or names[-1] not in classes or not classes[names[-1]].terminal:
        terminal = " or ".join(repr(n) for n in FILTERS if filter_class(n).terminal)
        problems.append(("pipeline", f"must end with {terminal}, the stage that calls the upstream"))
    order = {name: i for i, name in enumerate(names)}
    for name, cls in classes.items():
        note = f": {cls.order_note}" if cls.order_note else ""
        for needed in cls.requires:
            if order.get(needed, len(order)) > order[name]:
                problems.append(("pipeline", f"{name} needs {needed} before it{note}"))
        for earlier in cls.after:
            if earlier in order and order[earlier] > order[name]:
                problems.append(("pipeline", f"{earlier} must come before {name}{note}"))
    return problems


def build_pipeline(names: Sequence[str], components: Components) -> Pipeline:
    """The pipeline gateway.yaml names, each filter built from the components; a ConfigError naming the key path
    when the list cannot run (gateway check reports the same problems before)."""
    problems = pipeline_problems(names)
    if problems:
        raise ConfigError("the config", problems)
    return Pipeline([filter_class(name).build(components) for name in names])


class Pipeline:
    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.chunk_filters: tuple[Filter, ...] = tuple(f for f in reversed(self.filters) if f.sees_chunks)
        self.door: tuple[Filter, ...] = tuple(f for f in self.filters if f.at_door)

    async def authenticate(self, ctx: RequestContext) -> None:
        """For endpoints outside the pipeline (the models list): the door's stages run whole (identify, then
        their on_request: roles and allowed models), as they would in the pipeline."""
        for stage in self.door:
            await stage.on_request(ctx)

    async def close(self) -> None:
        for stage in self.filters:
            await stage.close()

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
