"""RequestContext's per-request state: what a filter keeps for its later hooks, found again by its type."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.context import RequestContext


@dataclass
class Held:
    text: str


@dataclass
class Other:
    n: int


def make_ctx() -> RequestContext:
    return RequestContext(request_id="r1", endpoint="chat/completions", headers=[], raw_body=b"{}", body={})


def test_state_is_found_by_its_type_and_nothing_is_made_until_a_filter_keeps_something():
    ctx = make_ctx()
    assert ctx.state(Held) is None
    assert ctx._state is None  # no dict for a request that keeps nothing
    held = Held("x")
    ctx.keep(held)
    ctx.keep(Other(1))
    assert ctx.state(Held) is held
    assert ctx.state(Other) == Other(1)
    ctx.keep(Held("y"))  # one value per type: the newer replaces it
    assert ctx.state(Held) == Held("y")
