"""The pipeline checks the order its filters declare (requires, after, terminal) where it is built; config.py knows
no filter name. And it reads a filter's optional hooks from what the filter declares, never by looking for them."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from gateway import pipeline
from gateway.components import Components
from gateway.config import ConfigError
from gateway.context import RequestContext
from gateway.filters.cache import CacheFilter
from gateway.load import parse_config
from gateway.pipeline import Pipeline, Stage, build_pipeline, pipeline_problems

MINIMAL = """
providers:
  mock: {type: mock}
models:
  demo: {deployments: [{provider: mock, model: demo-1}]}
"""


def test_the_shipped_orders_pass():
    assert pipeline_problems(["auth", "policy", "ratelimit", "guardrails", "route"]) == []
    assert pipeline_problems(["auth", "ratelimit", "route"]) == []  # ratelimit wants policy first only if present
    assert pipeline_problems(["route"]) == []


def test_unknown_and_repeated_filters_are_named_by_their_key_path():
    problems = pipeline_problems(["auth", "nope", "auth", "route"])
    assert problems[0][0] == "pipeline[1]"
    assert problems[0][1].startswith("unknown filter 'nope' (known: auth, cache, guardrails, policy, ratelimit, route)")
    assert ("pipeline", "a filter is named twice") in problems


def test_the_last_stage_must_be_one_that_answers():
    expected = ("pipeline", "must end with 'route', the stage that calls the upstream")
    assert pipeline_problems(["route", "auth"]) == [expected]
    assert pipeline_problems([]) == [expected]
    assert expected in pipeline_problems(["auth", "nope"])


def test_a_filter_s_declared_needs_are_checked():
    assert pipeline_problems(["guardrails", "route"]) == [
        ("pipeline", "guardrails needs policy before it: policies choose which checks run")
    ]
    assert pipeline_problems(["guardrails", "policy", "route"]) == [
        ("pipeline", "guardrails needs policy before it: policies choose which checks run")
    ]
    assert pipeline_problems(["ratelimit", "policy", "route"]) == [
        ("pipeline", "policy must come before ratelimit: so that its `limit` actions apply")
    ]


class Tracing(Stage):
    """A filter of a plug-in: needs auth before it, and sees streamed chunks."""

    name = "tracing"
    requires = ("auth",)
    sees_chunks = True
    built_with: ClassVar[list[Any]] = []

    @classmethod
    def build(cls, components: Components) -> Tracing:
        cls.built_with.append(components)
        return cls()


def test_a_registered_filter_declares_its_own_order(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(pipeline.FILTERS, "tracing", f"{__name__}:Tracing")
    assert pipeline_problems(["auth", "tracing", "route"]) == []
    assert pipeline_problems(["tracing", "auth", "route"]) == [("pipeline", "tracing needs auth before it")]


def test_the_loader_reports_pipeline_problems_with_every_other_one():
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "server: {workers: 0}\npipeline: [guardrails, nope, route]\n", source="g.yaml", env={})
    lines = info.value.lines()
    assert "g.yaml: server.workers: must be at least 1" in lines
    assert any(line.startswith("g.yaml: pipeline[1]: unknown filter 'nope'") for line in lines)
    assert "g.yaml: pipeline: guardrails needs policy before it: policies choose which checks run" in lines


def test_building_a_pipeline_that_cannot_run_is_a_config_error_and_builds_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(pipeline.FILTERS, "tracing", f"{__name__}:Tracing")
    monkeypatch.setattr(Tracing, "built_with", [])
    components: Any = object()  # nothing is built, so nothing reads it
    with pytest.raises(ConfigError) as info:
        build_pipeline(["tracing", "route"], components)
    assert info.value.lines() == ["the config: pipeline: tracing needs auth before it"]
    assert Tracing.built_with == []


class Door(Stage):
    name = "door"
    at_door = True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def identify(self, ctx: RequestContext) -> None:
        self.log.append("identify")

    async def on_request(self, ctx: RequestContext) -> None:
        self.log.append("door.request")

    async def close(self) -> None:
        self.log.append("door.close")


class Redacting(Stage):
    sees_chunks = True

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name  # type: ignore[misc]
        self.log = log

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        self.log.append(self.name)
        return chunk


@pytest.mark.anyio
async def test_hooks_come_from_what_each_filter_declares():
    log: list[str] = []
    door, first, last, plain = Door(log), Redacting("first", log), Redacting("last", log), Stage()
    built = Pipeline([door, first, plain, last])
    assert built.door == (door,)
    assert built.chunk_filters == (last, first)  # reverse order, as the response phase runs
    await built.authenticate(None)  # type: ignore[arg-type]
    await built.close()
    assert log == ["door.request", "door.close"]


def test_the_cache_goes_after_the_stages_that_refuse_or_rewrite():
    assert pipeline_problems(["auth", "policy", "ratelimit", "guardrails", "cache", "route"]) == []
    problems = pipeline_problems(["auth", "cache", "policy", "route"])
    assert problems == [("pipeline", f"policy must come before cache: {CacheFilter.order_note}")]
