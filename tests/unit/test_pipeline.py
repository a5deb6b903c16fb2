from __future__ import annotations

from typing import Any, ClassVar

import pytest

from gateway.context import RequestContext
from gateway.errors import PermissionDenied
from gateway.pipeline import Filter, Pipeline, Stage
from gateway.reply import Reply


def make_ctx() -> RequestContext:
    return RequestContext(request_id="r1", endpoint="chat/completions", headers=[], raw_body=b"{}", body={})


class Recording(Stage):
    name: ClassVar[str] = "rec"

    def __init__(self, name: str, log: list[str], answer: Reply | None = None, refuse: bool = False) -> None:
        self.name = name  # type: ignore[misc]
        self.log = log
        self.answer = answer
        self.refuse = refuse

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        self.log.append(f"{self.name}.request")
        if self.refuse:
            raise PermissionDenied("no")
        return self.answer

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        self.log.append(f"{self.name}.response:{reply.status}")
        return None


async def run(pipeline: Pipeline, ctx: RequestContext) -> Reply:
    entered: list[Filter] = []
    reply = await pipeline.run(ctx, entered)
    return await pipeline.complete(ctx, reply, entered)


@pytest.mark.anyio
async def test_filters_run_forward_then_reverse_and_the_terminal_answers():
    log: list[str] = []
    stages = [Recording("a", log), Recording("b", log), Recording("route", log, Reply(status=200))]
    ctx = make_ctx()
    reply = await run(Pipeline(stages), ctx)
    assert reply.status == 200
    assert log == [
        "a.request", "b.request", "route.request", "route.response:200", "b.response:200", "a.response:200",
    ]  # fmt: skip
    assert [span.name for span in ctx.spans] == ["a", "b", "route"]
    assert all(span.duration_ns >= 0 for span in ctx.spans)


@pytest.mark.anyio
async def test_an_early_answer_stops_the_rest_and_only_entered_stages_see_the_response():
    log: list[str] = []
    stages = [Recording("a", log), Recording("cache", log, Reply(status=203)), Recording("route", log, Reply())]
    reply = await run(Pipeline(stages), make_ctx())
    assert reply.status == 203
    assert log == ["a.request", "cache.request", "cache.response:203", "a.response:203"]


@pytest.mark.anyio
async def test_a_refusal_becomes_an_openai_error_reply_seen_by_entered_stages():
    log: list[str] = []
    stages = [Recording("a", log), Recording("policy", log, refuse=True), Recording("route", log, Reply())]
    ctx = make_ctx()
    reply = await run(Pipeline(stages), ctx)
    assert reply.status == 403
    assert b'"type":"permission_error"' in reply.body
    assert isinstance(ctx.error, PermissionDenied)
    assert log == ["a.request", "policy.request", "policy.response:403", "a.response:403"]


class Replacing(Recording):
    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        return Reply(status=299, body=b"replaced")


@pytest.mark.anyio
async def test_on_response_may_replace_a_whole_reply_but_not_a_stream():
    async def chunks() -> Any:
        yield b"{}"

    whole = await run(Pipeline([Replacing("g", []), Recording("route", [], Reply())]), make_ctx())
    assert whole.status == 299
    streamed = await run(Pipeline([Replacing("g", []), Recording("route", [], Reply(stream=chunks()))]), make_ctx())
    assert streamed.status == 200
    assert streamed.stream is not None


class Settling(Recording):
    """A stage whose response phase is a plain function (the route and cache filters')."""

    settles_now = True

    def __init__(self, name: str, log: list[str], answer: Reply | None = None, fail: bool = False) -> None:
        super().__init__(name, log, answer)
        self.fail = fail

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        raise AssertionError("a settles_now stage's on_response is not awaited")

    def settle(self, ctx: RequestContext, reply: Reply) -> None:
        self.log.append(f"{self.name}.settle:{reply.status}")
        if self.fail:
            raise RuntimeError("a bug")


@pytest.mark.anyio
async def test_a_settles_now_stage_is_settled_in_its_turn_and_its_failure_spares_the_others():
    log: list[str] = []
    stages = [Recording("a", log), Settling("cache", log), Settling("route", log, Reply(status=200))]
    reply = await run(Pipeline(stages), make_ctx())
    assert reply.status == 200
    assert log == ["a.request", "cache.request", "route.request", "route.settle:200", "cache.settle:200",
                   "a.response:200"]  # fmt: skip
    log.clear()
    ctx = make_ctx()
    stages = [Recording("a", log), Settling("cache", log, fail=True), Settling("route", log, Reply(status=200))]
    reply = await run(Pipeline(stages), ctx)
    assert reply.status == 500  # as a failing on_response
    assert log[-2:] == ["cache.settle:200", "a.response:500"]
