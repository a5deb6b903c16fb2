"""The Filter protocol: what a pipeline stage is, and `Stage`, its no-op defaults. gateway/pipeline.py runs filters
through this protocol only; a filter module subclasses Stage and names what it uses in its constructor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, final

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.context import RequestContext
    from gateway.reply import Reply


@final
class Later:
    """The type of LATER, what `decide` returns when the stage must await: its on_request runs instead."""

    __slots__ = ()


LATER: Final = Later()


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
    # Its response phase never awaits nor replaces the answer: the pipeline calls `settle`, a plain function,
    # instead of awaiting on_response (a coroutine a request less for each such stage).
    settles_now: ClassVar[bool]
    # Its request phase mostly decides without awaiting: the pipeline calls `decide`, a plain function, and awaits
    # on_request only when decide returns LATER (a coroutine a request less for each such stage, most of the time).
    decides_now: ClassVar[bool]

    @classmethod
    def build(cls, components: Components) -> Filter:
        """The filter, from the components it uses (and its config section, from components.config)."""
        ...

    async def identify(self, ctx: RequestContext) -> None:
        """Before the body is read (for `at_door` filters): who is calling, from the headers alone."""

    def identify_now(self, ctx: RequestContext) -> bool:
        """identify without awaiting when it can (a caller already known): True when done, False when identify
        must be awaited (having changed nothing)."""

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        """None: go on. A Reply: answer now. Refuse by raising a GatewayError."""

    def decide(self, ctx: RequestContext) -> Reply | Later | None:
        """The request phase of a `decides_now` filter, called in on_request's place: as on_request, or LATER,
        having changed nothing, when it must await (on_request is then awaited and does the whole of it)."""

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        """Reverse order, for the stages whose on_request ran. A Reply replaces the answer (not for streams)."""

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        """The response phase of a `settles_now` filter, called in on_response's place."""

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
    settles_now: ClassVar[bool] = False
    decides_now: ClassVar[bool] = False

    async def identify(self, ctx: RequestContext) -> None:
        return None

    def identify_now(self, ctx: RequestContext) -> bool:
        return False

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        return None

    def decide(self, ctx: RequestContext) -> Reply | Later | None:
        return LATER

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        if self.settles_now:
            self.settle(ctx, reply)
        return None

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        return None

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None
