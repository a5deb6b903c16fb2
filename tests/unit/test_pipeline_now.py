"""Pipeline.run_now then run, and complete_now then complete (the flow's fast paths, without a coroutine), against
run and complete alone: for random pipelines of stages that decide now or await, answer, refuse, say LATER, or
settle now or later, the same stages called in the same order, the same reply, error, entered list and spans."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from hypothesis import given, settings, strategies as st

from gateway.context import RequestContext
from gateway.errors import GatewayError, PermissionDenied
from gateway.filters.base import LATER, Later
from gateway.pipeline import Filter, Pipeline, Stage
from gateway.reply import Reply

# What a stage does in its request phase: go on, answer, refuse (a GatewayError), or break (a bug: not one).
ACTIONS = ("none", "answer", "refuse", "bug")


class Fake(Stage):
    name: ClassVar[str] = "fake"

    def __init__(self, i: int, spec: dict[str, Any], log: list[str]) -> None:
        self.name = f"s{i}"  # type: ignore[misc]
        self.i = i
        self.spec = spec
        self.log = log
        self.decides_now = spec["decides_now"]  # type: ignore[misc]
        self.settles_now = spec["settle"] == "now"  # type: ignore[misc]

    def _act(self, action: str) -> Reply | None:
        if action == "answer":
            return Reply(status=200 + self.i, body=b"%d" % self.i)
        if action == "refuse":
            raise PermissionDenied(f"no {self.i}")
        if action == "bug":
            raise RuntimeError("a bug")
        return None

    def decide(self, ctx: RequestContext) -> Reply | Later | None:
        self.log.append(f"{self.name}.decide")
        if self.spec["later"]:
            return LATER
        return self._act(self.spec["action"])

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        self.log.append(f"{self.name}.on_request")
        return self._act(self.spec["action"])

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        self.log.append(f"{self.name}.settle:{reply.status}")
        if self.spec["settle_raises"]:
            raise PermissionDenied(f"settle {self.i}")

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        if self.spec["settle"] == "now":
            self.settle(ctx, reply)
            return None
        self.log.append(f"{self.name}.on_response:{reply.status}")
        if self.spec["settle_raises"]:
            raise PermissionDenied(f"on_response {self.i}")
        return None


class Silent(Fake):
    """A stage without a response phase (Stage's own on_response)."""

    on_response = Stage.on_response  # type: ignore[assignment]
    settle = Stage.settle  # type: ignore[assignment]


stage_specs = st.fixed_dictionaries(
    {
        "decides_now": st.booleans(),
        "later": st.booleans(),
        "action": st.sampled_from(ACTIONS),
        "settle": st.sampled_from(("now", "later", "none")),
        "settle_raises": st.booleans(),
    }
)


def build(specs: list[dict[str, Any]]) -> tuple[Pipeline, list[str]]:
    log: list[str] = []
    stages = [(Silent if s["settle"] == "none" else Fake)(i, s, log) for i, s in enumerate(specs)]
    return Pipeline(stages), log


def make_ctx() -> RequestContext:
    return RequestContext(request_id="r1", endpoint="chat/completions", headers=[], raw_body=b"{}", body={})


def outcome(ctx: RequestContext, reply: Reply | BaseException, entered: list[Filter], log: list[str]) -> Any:
    if isinstance(reply, BaseException):
        got: Any = repr(reply)
    else:
        got = (reply.status, reply.body, reply.headers)
    error = ctx.error
    return got, [f.name for f in entered], [s.name for s in ctx.spans], log, type(error), str(error or "")


async def general(specs: list[dict[str, Any]]) -> Any:
    pipeline, log = build(specs)
    ctx, entered = make_ctx(), []
    try:
        reply = await pipeline.run(ctx, entered)
        reply = await pipeline.complete(ctx, reply, entered)
    except RuntimeError as exc:
        return outcome(ctx, exc, entered, log)
    return outcome(ctx, reply, entered, log)


async def fast(specs: list[dict[str, Any]]) -> tuple[Any, bool, bool]:
    """The flow's order: run_now, run when it says so; complete_now, complete when it says so. Also which of the
    fast paths finished the work alone."""
    pipeline, log = build(specs)
    ctx, entered = make_ctx(), []
    ran_now = settled_now = False
    try:
        ran = pipeline.run_now(ctx, entered)
        if isinstance(ran, int):
            reply = await pipeline.run(ctx, entered, ran)
        else:
            reply, ran_now = ran, True
        settled = pipeline.complete_now(ctx, reply, entered)
        if settled is None:
            reply = await pipeline.complete(ctx, reply, entered)
        else:
            reply, settled_now = settled, True
    except RuntimeError as exc:
        return outcome(ctx, exc, entered, log), ran_now, settled_now
    return outcome(ctx, reply, entered, log), ran_now, settled_now


@settings(max_examples=400, deadline=None)
@given(st.lists(stage_specs, min_size=0, max_size=5))
def test_the_fast_paths_do_what_run_and_complete_do(specs: list[dict[str, Any]]) -> None:
    expected = asyncio.run(general(specs))
    got, _, _ = asyncio.run(fast(specs))
    assert got == expected


def test_a_hit_needs_no_coroutine() -> None:
    """auth and a cache that answer now, a route that would await: run_now answers, complete_now settles."""
    now = {"decides_now": True, "later": False, "action": "none", "settle": "none", "settle_raises": False}
    cache = {**now, "action": "answer", "settle": "now"}
    route = {"decides_now": False, "later": False, "action": "answer", "settle": "later", "settle_raises": False}
    (got, ran_now, settled_now) = asyncio.run(fast([now, cache, route]))
    assert ran_now
    assert settled_now
    assert got[0][0] == 201
    assert got[3] == ["s0.decide", "s1.decide", "s1.settle:201"]
    # A miss: the cache decides now, the route awaits, and settles later: both general paths run.
    (got, ran_now, settled_now) = asyncio.run(fast([now, {**cache, "action": "none"}, route]))
    assert not ran_now
    assert not settled_now
    assert got[3] == ["s0.decide", "s1.decide", "s2.on_request", "s2.on_response:202", "s1.settle:202"]


def test_a_stage_that_says_later_is_awaited_once_and_timed_from_its_decide() -> None:
    spec = {"decides_now": True, "later": True, "action": "answer", "settle": "none", "settle_raises": False}
    pipeline, log = build([spec])
    ctx, entered = make_ctx(), []
    ran = pipeline.run_now(ctx, entered)
    assert isinstance(ran, int)
    assert ran > 0
    assert not ctx.spans
    assert [f.name for f in entered] == ["s0"]
    reply = asyncio.run(pipeline.run(ctx, entered, ran))
    assert reply.status == 200
    assert log == ["s0.decide", "s0.on_request"]
    assert [s.name for s in ctx.spans] == ["s0"]
    assert ctx.spans[0].start_ns == ran - ctx.started_ns


def test_no_terminal_stage_is_an_error_either_way() -> None:
    spec = {"decides_now": True, "later": False, "action": "none", "settle": "none", "settle_raises": False}
    got, ran_now, _ = asyncio.run(fast([spec]))
    assert ran_now
    assert got == asyncio.run(general([spec]))
    assert got[4] is GatewayError


def test_answer_now_leaves_a_send_that_is_not_uvicorns_to_answer() -> None:
    """Under another server (an ASGI test client) nothing is worked out or sent: answer, awaited, does it all."""
    from gateway.api.openai import CompletionEndpoint

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    endpoint = object.__new__(CompletionEndpoint)
    ctx = make_ctx()
    assert not endpoint.answer_now(ctx, Reply(status=200, body=b"{}"), send)
    assert ctx.status == 0
    assert ctx.response_body is None
    assert not sent
