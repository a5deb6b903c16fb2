"""The official openai SDK and the OpenAI Agents SDK, unchanged, against the gateway's Responses API: whole and
streamed responses, structured output, function calling over several turns with previous_response_id, stored
responses (retrieve, delete, input items), errors as the SDK's exceptions, and a conversation that survives a
failover to another provider. Upstreams: the mock provider and scripted chat models (tests/scripted.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from pydantic import BaseModel

from gateway.config import parse_config
from gateway.runtime import Gateway
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import record_of
from tests.scripted import ScriptedModel
from tests.servers import serve

pytestmark = pytest.mark.sdk

OTHER_KEY = "sk-other-project"
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Server:
    url: str
    gateway: Gateway
    a: ScriptedModel
    b: ScriptedModel
    tmp: Any
    clients: list[openai.OpenAI] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with the mock (`demo`) and two scripted models behind two providers: `agent` is served by A and
    falls back to `agent-b`, served by B."""
    a, b = ScriptedModel(), ScriptedModel()
    tmp = tmp_path_factory.mktemp("responses")
    with serve(a.app()) as a_url, serve(b.app()) as b_url:
        overrides = {
            "providers": {
                "a": {"type": "openai", "base_url": f"{a_url}/v1", "api_key": "sk-a"},
                "b": {"type": "openai", "base_url": f"{b_url}/v1", "api_key": "sk-b"},
            },
            "models": {
                "agent": {"deployments": [{"provider": "a", "model": "scripted-a"}], "fallbacks": ["agent-b"]},
                "agent-b": {"deployments": [{"provider": "b", "model": "scripted-b"}]},
                "demo-errorevent": {"deployments": [{"provider": "mock", "model": "demo-errorevent-3"}]},
            },
            "routing": {"retries": 0},
            "auth": {
                "keys": [
                    {"name": "tester", "key": KEY, "project": "p1"},
                    {"name": "other", "key": OTHER_KEY, "project": "p2"},
                ]
            },  # fmt: skip
        }
        data = merge(base_config(tmp), overrides)
        config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
        with running(config) as (url, gateway):
            server = Server(url, gateway, a, b, tmp)
            yield server
            for client in server.clients:
                client.close()


@pytest.fixture(autouse=True)
def _healthy(server: Server) -> Iterator[None]:
    server.a.failing = server.b.failing = False
    yield
    server.a.failing = server.b.failing = False


def sdk(server: Server, key: str = KEY) -> openai.OpenAI:
    """A client closed with the module's server: one left to the garbage collector warns about its sockets in
    whichever test runs then (warnings are errors)."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=10)
    server.clients.append(client)
    return client


def test_create_whole_answers_a_response_with_the_gateways_ids(server: Server) -> None:
    raw = sdk(server).responses.with_raw_response.create(model="demo", input="hello gateway world")
    response = raw.parse()
    request_id = raw.headers["x-gateway-request-id"]
    assert response.id == f"resp_{request_id}"
    assert response.status == "completed"
    assert response.output_text == "Mock answer: you said hello gateway world"
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    record = record_of(server.tmp / "gateway.db", request_id)
    assert record["status"] == 200
    assert record["model_requested"] == "demo"
    assert orjson.loads(record["tags"])["api"] == "responses"


def test_stream_events_are_in_order_and_end_completed(server: Server) -> None:
    events = list(sdk(server).responses.create(model="demo", input="hello gateway world", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Mock answer: you said hello gateway world"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text
    assert final.usage is not None
    assert final.usage.total_tokens > 0


def test_the_stream_helper_accumulates_the_final_response(server: Server) -> None:
    with sdk(server).responses.stream(model="demo", input="hello gateway world") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Mock answer: you said hello gateway world"


class Weather(BaseModel):
    city: str
    celsius: int


def test_parse_returns_the_pydantic_model(server: Server) -> None:
    parsed = sdk(server).responses.parse(model="agent", input="the weather in Paris", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", celsius=21)
    sent = server.a.requests[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["celsius"]["type"] == "integer"


def test_function_calling_over_turns_with_previous_response_id(server: Server) -> None:
    client = sdk(server)
    first = client.responses.create(
        model="agent", input="call get_weather for Paris", tools=[WEATHER_TOOL], instructions="Be brief."
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].arguments == '{"city":"Paris"}'
    second = client.responses.create(
        model="agent",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER_TOOL],
    )
    assert second.output_text == "Answer: sunny, 21 C"
    assert second.previous_response_id == first.id
    # The upstream saw the whole conversation: the first turn's input, its call, and the tool's output.
    messages = server.a.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] in (
        "call get_weather for Paris",
        [{"type": "text", "text": "call get_weather for Paris"}],
    )
    assert messages[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny, 21 C"}


def test_a_conversation_survives_a_failover_to_another_provider(server: Server) -> None:
    client = sdk(server)
    first = client.responses.create(model="agent", input="my name is Ada")
    assert first.output_text == "Echo: my name is Ada"
    server.a.failing = True  # the first turn's deployment goes down
    served_before = len(server.b.requests)
    raw = client.responses.with_raw_response.create(
        model="agent", previous_response_id=first.id, input="what is my name?"
    )
    second = raw.parse()
    assert raw.headers["x-gateway-provider"] == "b"
    assert second.output_text == "Echo: what is my name?"
    assert len(server.b.requests) == served_before + 1
    texts = [m["content"] for m in server.b.requests[-1]["messages"]]
    flat = str(texts)
    assert "my name is Ada" in flat
    assert "Echo: my name is Ada" in flat
    assert "what is my name?" in flat


def test_retrieve_input_items_and_delete(server: Server) -> None:
    client = sdk(server)
    created = client.responses.create(
        model="demo", input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    )
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.output_text == created.output_text
    items = client.responses.input_items.list(created.id)
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["two", "one"]  # newest first, as OpenAI lists them
    ascending = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [i.content[0].text for i in ascending.data] == ["one"]  # type: ignore[union-attr]
    assert ascending.has_more
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_another_projects_response_does_not_exist_for_the_caller(server: Server) -> None:
    mine = sdk(server).responses.create(model="demo", input="secret")
    other = sdk(server, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError) as caught:
        other.responses.create(model="demo", input="go on", previous_response_id=mine.id)
    assert caught.value.code == "previous_response_not_found"
    assert sdk(server).responses.retrieve(mine.id).id == mine.id  # still there for its own project


def test_store_false_keeps_nothing(server: Server) -> None:
    client = sdk(server)
    created = client.responses.create(model="demo", input="forget me", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="demo", input="again", previous_response_id=created.id)
    assert caught.value.code == "previous_response_not_found"


def test_errors_are_the_sdks_exceptions(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "sk-wrong").responses.create(model="demo", input="hi")
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(server).responses.create(model="no-such-model", input="hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(server).responses.create(model="demo", input="hi", temperature="hot")  # type: ignore[arg-type]
    assert bad.value.param == "temperature"
    server.a.failing = server.b.failing = True
    with pytest.raises(openai.InternalServerError):
        sdk(server).responses.create(model="agent", input="hi")


def test_a_failed_stream_ends_with_response_failed(server: Server) -> None:
    events = list(sdk(server).responses.create(model="demo-errorevent", input="hi", stream=True))
    assert events[-1].type in ("response.failed", "error")


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"model": "demo"}', b'{"model": "demo", "input": 3}'])
def test_bad_bodies_get_a_400_naming_the_problem(server: Server, body: bytes) -> None:
    answer = httpx.post(f"{server.url}/v1/responses", content=body,
                        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_unknown_sub_resource_is_404(server: Server) -> None:
    answer = httpx.get(f"{server.url}/v1/responses/resp_x/whatever", headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "invalid_request_error"
