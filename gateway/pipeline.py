"""The Pipeline that runs filters (the Filter protocol, gateway/filters/base.py) in the order gateway.yaml names them.

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
from typing import TYPE_CHECKING

from gateway.config import ConfigError
from gateway.context import RequestContext, Span
from gateway.errors import GatewayError, InternalError
from gateway.filters.base import Filter, Later, Stage
from gateway.reply import Reply

__all__ = ["FILTERS", "Filter", "Pipeline", "Stage", "build_pipeline", "filter_class", "pipeline_problems"]

if TYPE_CHECKING:
    from gateway.components import Components

logger = logging.getLogger("gateway")
_NO_RESPONSE_PHASE: object = Stage.on_response
_new_tuple = tuple.__new__
_perf_ns = time.perf_counter_ns


# name -> "module:Class", imported when a pipeline names it.
FILTERS: dict[str, str] = {
    "auth": "gateway.filters.auth:AuthFilter",
    "policy": "gateway.filters.policy:PolicyFilter",
    "ratelimit": "gateway.filters.ratelimit:RateLimitFilter",
    "guardrails": "gateway.filters.guardrails:GuardrailsFilter",
    "cache": "gateway.filters.cache:CacheFilter",
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
        # The stages with a response phase of their own: Stage's no-op on_response is not awaited for the others,
        # and a `settles_now` stage's is called as a plain function.
        self.settling = frozenset(
            id(f) for f in self.filters if f.settles_now or type(f).on_response is not _NO_RESPONSE_PHASE
        )
        self.settling_now = frozenset(id(f) for f in self.filters if f.settles_now)

    async def authenticate(self, ctx: RequestContext) -> None:
        """For endpoints outside the pipeline (the models list): the door's stages run whole (identify, then
        their on_request: roles and allowed models), as they would in the pipeline."""
        for stage in self.door:
            await stage.on_request(ctx)

    async def close(self) -> None:
        for stage in self.filters:
            await stage.close()

    def run_now(self, ctx: RequestContext, entered: list[Filter]) -> Reply | int:
        """The request phase without a coroutine, as far as it goes without awaiting: `run`'s work for the first
        stages that decide now (a hit's whole request phase: auth and the cache in memory). A Reply, as `run`'s,
        when one answered or refused; else an int, and `run(ctx, entered, that int)` goes on from the stage at
        len(entered): 0 when that stage has no `decide`, else the clock (perf_counter_ns) when its `decide` said
        LATER, which then entered it (its on_request is awaited next, its span timed from then)."""
        reply: Reply | Later | None = None
        try:
            for stage in self.filters:
                if not stage.decides_now:
                    return 0
                entered.append(stage)
                start = _perf_ns()
                try:
                    reply = stage.decide(ctx)
                    if type(reply) is Later:
                        return start
                finally:
                    if type(reply) is not Later:  # else run's own span, once on_request has run
                        ctx.spans.append(_new_tuple(Span, (stage.name, start - ctx.started_ns, _perf_ns() - start)))
                if reply is not None:
                    return reply
        except GatewayError as exc:
            ctx.error = exc
            return Reply.from_error(exc)
        # Every stage decided now and none answered: only when a pipeline has no terminal stage (config forbids it).
        ctx.error = GatewayError("The pipeline produced no answer.")
        return Reply.from_error(ctx.error)

    async def run(self, ctx: RequestContext, entered: list[Filter], resume: int = 0) -> Reply:
        """Run the request phase, appending each stage to `entered` as it starts, for `complete`. The caller owns
        that list so that a request cancelled midway (its client left) still settles the stages it entered.
        From the stage at len(entered) on (every stage, when called first): after run_now, with what it returned
        (`resume`, nonzero when the last stage entered said LATER at that time: its on_request is awaited first)."""
        reply: Reply | None = None
        first = len(entered)
        try:
            if resume:
                stage = entered[-1]
                try:
                    reply = await stage.on_request(ctx)
                finally:
                    ctx.spans.append(_new_tuple(Span, (stage.name, resume - ctx.started_ns, _perf_ns() - resume)))
            for stage in self.filters[first:] if reply is None else ():
                entered.append(stage)
                start = _perf_ns()
                try:
                    if stage.decides_now:
                        decided = stage.decide(ctx)
                        reply = await stage.on_request(ctx) if type(decided) is Later else decided
                    else:
                        reply = await stage.on_request(ctx)
                finally:
                    # ctx.add_span, written out (a call less per stage); a Span by tuple.__new__.
                    ctx.spans.append(_new_tuple(Span, (stage.name, start - ctx.started_ns, _perf_ns() - start)))
                if reply is not None:
                    break
        except GatewayError as exc:
            ctx.error = exc
            reply = Reply.from_error(exc)
        if reply is None:  # only when a pipeline has no terminal stage, which config checks forbid
            ctx.error = GatewayError("The pipeline produced no answer.")
            reply = Reply.from_error(ctx.error)
        return reply

    def complete_now(self, ctx: RequestContext, reply: Reply, entered: list[Filter]) -> Reply | None:
        """`complete` without a coroutine, when every stage entered that has a response phase settles now (a
        hit's: the cache's); None, having done nothing, when one must be awaited: `complete` then does it all."""
        settling, settling_now = self.settling, self.settling_now
        for stage in entered:
            key = id(stage)
            if key in settling and key not in settling_now:
                return None
        for stage in reversed(entered):
            if id(stage) not in settling_now:
                continue
            try:
                stage.settle(ctx, reply)
            # As complete: a bug in one stage must not skip the others' settlement (logged by _settlement_failed).
            except Exception as exc:  # noqa: BLE001
                failed = _settlement_failed(stage, ctx, exc)
                if reply.stream is None:
                    reply = failed
        return reply

    async def complete(self, ctx: RequestContext, reply: Reply, entered: list[Filter]) -> Reply:
        """The response phase, in reverse order. For a stream, called after it has ended."""
        for stage in reversed(entered):
            key = id(stage)
            if key not in self.settling:
                continue
            try:
                if key in self.settling_now:
                    stage.settle(ctx, reply)
                    continue
                replaced = await stage.on_response(ctx, reply)
            # A bug in one stage must not skip the others' settlement (a held rate-limit slot); logged there.
            except Exception as exc:  # noqa: BLE001
                replaced = _settlement_failed(stage, ctx, exc)
            if replaced is not None and reply.stream is None:
                reply = replaced
        return reply


def _settlement_failed(stage: Filter, ctx: RequestContext, exc: Exception) -> Reply:
    """The error reply of a stage whose response phase raised (called in its except clause): a GatewayError as
    itself, anything else logged with its traceback and answered as an internal error."""
    if isinstance(exc, GatewayError):
        ctx.error = exc
    else:
        logger.exception("%s.on_response failed for request %s", stage.name, ctx.request_id)
        ctx.error = InternalError()
    return Reply.from_error(ctx.error)
