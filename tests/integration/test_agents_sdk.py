"""The OpenAI Agents SDK, unchanged, against the gateway's Responses API: an agent with a function tool and a
handoff, whole and streamed, served by scripted chat models (tests/scripted.py) through the whole pipeline; and a
conversation chained by previous_response_id whose second turn is served by another provider after the first
turn's deployment went down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import yaml
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from gateway.config import parse_config
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.scripted import ScriptedModel
from tests.servers import serve

pytestmark = [pytest.mark.sdk, pytest.mark.anyio]

set_tracing_disabled(True)  # the SDK would upload its traces to OpenAI


@dataclass
class Server:
    url: str
    a: ScriptedModel
    b: ScriptedModel


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    a, b = ScriptedModel(), ScriptedModel()
    tmp = tmp_path_factory.mktemp("agents")
    with serve(a.app()) as a_url, serve(b.app()) as b_url:
        overrides = {
            "providers": {
                "a": {"type": "openai", "base_url": f"{a_url}/v1", "api_key": "sk-a"},
                "b": {"type": "openai", "base_url": f"{b_url}/v1", "api_key": "sk-b"},
            },
            "models": {
                "agent": {"deployments": [{"provider": "a", "model": "scripted-a"}], "fallbacks": ["agent-b"]},
                "agent-b": {"deployments": [{"provider": "b", "model": "scripted-b"}]},
            },
            "routing": {"retries": 0},
            "pipeline": ["auth", "policy", "ratelimit", "guardrails", "route"],
        }
        data = merge(base_config(tmp), overrides)
        config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
        with running(config) as (url, _gateway):
            yield Server(url, a, b)


@pytest.fixture(autouse=True)
def _healthy(server: Server) -> Iterator[None]:
    server.a.failing = server.b.failing = False
    yield
    server.a.failing = server.b.failing = False


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def sdk(server: Server) -> openai.AsyncOpenAI:
    """A client for `async with`: one left open is a socket a later test's garbage collection warns about."""
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=10)


def agents(client: openai.AsyncOpenAI) -> Agent[Any]:
    model = OpenAIResponsesModel("agent", client)
    weather = Agent(name="weather_agent", instructions="Answer about the weather.", tools=[get_weather], model=model)
    return Agent(name="triage", instructions="Hand weather questions over.", handoffs=[weather], model=model)


PROMPT = "use transfer_to_weather_agent, then get_weather for Paris"


async def test_an_agent_with_a_tool_and_a_handoff_runs_whole(server: Server) -> None:
    async with sdk(server) as client:
        result = await Runner.run(agents(client), PROMPT)
    assert result.final_output == "Answer: sunny in Paris"
    assert result.last_agent.name == "weather_agent"
    # three model calls: the handoff, the tool call, the answer
    tools_seen = [[t["function"]["name"] for t in body.get("tools") or ()] for body in server.a.requests[-3:]]
    assert tools_seen == [["transfer_to_weather_agent"], ["get_weather"], ["get_weather"]]


async def test_an_agent_with_a_tool_and_a_handoff_runs_streamed(server: Server) -> None:
    async with sdk(server) as client:
        result = Runner.run_streamed(agents(client), PROMPT)
        kinds = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in kinds
    assert "agent_updated_stream_event" in kinds
    assert result.final_output == "Answer: sunny in Paris"
    assert result.last_agent.name == "weather_agent"


async def test_a_chained_conversation_keeps_its_context_across_a_failover(server: Server) -> None:
    async with sdk(server) as client:
        agent = Agent(name="assistant", instructions="Be helpful.", model=OpenAIResponsesModel("agent", client))
        first = await Runner.run(agent, "my name is Ada")
        assert first.final_output == "Echo: my name is Ada"
        assert first.last_response_id is not None
        server.a.failing = True
        second = await Runner.run(agent, "what is my name?", previous_response_id=first.last_response_id)
    assert second.final_output == "Echo: what is my name?"
    flat = str(server.b.requests[-1]["messages"])
    assert "my name is Ada" in flat
    assert "Echo: my name is Ada" in flat
