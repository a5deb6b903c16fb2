"""A deployment whose provider speaks the Responses API (`responses_api: true`) gets a Responses request in that
API, as it came: the answer goes back as it came (its reasoning items too), usage and the record are taken from
it, the conversation the gateway keeps is inlined (nothing stored upstream), and a conversation goes on when the
next turn falls back to a chat-only deployment. A filter that changed the request sends it the chat way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from gateway.config import parse_config
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import record_of
from tests.scripted import ScriptedModel
from tests.servers import serve

pytestmark = pytest.mark.sdk

REWRITE = """
policies:
  - name: cap
    match: {metadata.cap: "yes"}
    actions:
      rewrite: {max_tokens: 100}
"""


@dataclass
class Server:
    url: str
    native: ScriptedModel
    chat: ScriptedModel
    tmp: Path
    clients: list[openai.OpenAI] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    native, chat = ScriptedModel(), ScriptedModel()
    tmp = tmp_path_factory.mktemp("native")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "p.yaml").write_text(REWRITE)
    with serve(native.app()) as native_url, serve(chat.app()) as chat_url:
        overrides: dict[str, Any] = {
            "providers": {
                "native": {"type": "openai", "base_url": f"{native_url}/v1", "api_key": "sk-n", "responses_api": True},
                "chat": {"type": "openai", "base_url": f"{chat_url}/v1", "api_key": "sk-c"},
            },
            "models": {
                "thinker": {"deployments": [{"provider": "native", "model": "o-up"}], "fallbacks": ["chatty"]},
                "chatty": {"deployments": [{"provider": "chat", "model": "chat-up"}]},
            },
            "routing": {"retries": 0},
            "pipeline": ["auth", "policy", "route"],
            "policies": {"paths": [str(tmp / "policies")]},
        }
        data = merge(base_config(tmp), overrides)
        config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
        with running(config) as (url, _):
            server = Server(url, native, chat, tmp)
            yield server
            for client in server.clients:
                client.close()


@pytest.fixture(autouse=True)
def _healthy(server: Server) -> Iterator[None]:
    server.native.failing = False
    yield
    server.native.failing = False


def sdk(server: Server) -> openai.OpenAI:
    """A client closed with the module's server: one left to the garbage collector warns about its sockets in
    whichever test runs then (warnings are errors)."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    server.clients.append(client)
    return client


def test_a_whole_answer_comes_back_as_the_upstream_gave_it(server: Server) -> None:
    raw = sdk(server).responses.with_raw_response.create(model="thinker", input="hello", instructions="Think.")
    response = raw.parse()
    request_id = raw.headers["x-gateway-request-id"]
    assert response.id == f"resp_{request_id}"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].encrypted_content == "gAAAA-thought"  # type: ignore[union-attr]
    assert response.output_text == "Native: hello"
    assert response.usage is not None
    assert response.usage.input_tokens == 42
    sent = server.native.requests[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["model"] == "o-up"
    assert sent["store"] is False
    assert sent["instructions"] == "Think."
    assert all("id" not in item for item in sent["input"])
    record = record_of(server.tmp / "gateway.db", request_id)
    assert record["prompt_tokens"] == 42
    assert record["reasoning_tokens"] == 3
    assert record["provider"] == "native"


def test_the_next_turn_carries_the_conversation_reasoning_included(server: Server) -> None:
    client = sdk(server)
    first = client.responses.create(model="thinker", input="my name is Ada")
    second = client.responses.create(model="thinker", input="what is my name?", previous_response_id=first.id)
    assert second.output_text == "Native: what is my name?"
    assert second.previous_response_id == first.id
    sent = server.native.requests[-1]["input"]
    assert [item.get("type") or item.get("role") for item in sent] == ["message", "reasoning", "message", "message"]
    assert sent[1]["encrypted_content"] == "gAAAA-thought"
    assert "previous_response_id" not in server.native.requests[-1]


def test_a_stream_is_served_in_the_responses_api_and_relayed_in_order(server: Server) -> None:
    events = list(sdk(server).responses.create(model="thinker", input="stream me", stream=True))
    assert server.native.requests[-1]["path"] == "/v1/responses"
    assert server.native.requests[-1]["stream"] is True
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Native: stream me"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage is not None
    assert final.response.usage.input_tokens == 42


def test_a_request_a_filter_changed_goes_the_chat_way(server: Server) -> None:
    before = len(server.native.requests)
    answer = sdk(server).responses.create(model="thinker", input="cap me", metadata={"cap": "yes"})
    sent = server.native.requests[-1]
    assert len(server.native.requests) == before + 1
    assert "messages" in sent  # the chat translation, with the policy's rewrite
    assert sent["max_tokens"] == 100
    assert answer.output_text == "Echo: cap me"


def test_a_fallback_to_a_chat_deployment_keeps_the_conversation(server: Server) -> None:
    client = sdk(server)
    first = client.responses.create(model="thinker", input="my name is Ada")
    server.native.failing = True
    raw = client.responses.with_raw_response.create(
        model="thinker", input="what is my name?", previous_response_id=first.id
    )
    assert raw.headers["x-gateway-provider"] == "chat"
    assert raw.parse().output_text == "Echo: what is my name?"
    flat = str(server.chat.requests[-1]["messages"])
    assert "my name is Ada" in flat
    assert "Native: my name is Ada" in flat
