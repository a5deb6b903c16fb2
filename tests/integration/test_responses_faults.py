"""The Responses API on a bad day: a stream the client leaves, one the upstream breaks, one a guardrail blocks
(none is stored as completed); PostgreSQL frozen while a turn looks up its previous response (a bounded 503, not
a hang) and while turns are saved (the answers are not delayed); a restart (SQLite) and another replica
(PostgreSQL) still find the conversation; a chain at max_chain and one with a deleted link."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.faults import FaultyProxy
from tests.integration.helpers import record_of, wait_until
from tests.servers import Upstream, serve
from tests.services import drop_schema, require_postgres

AUTH = {"authorization": f"Bearer {KEY}"}
GUARD = """
policies:
  - name: no-secrets-out
    actions:
      guardrails:
        keywords: {action: block, stage: output, deny: ["forbidden"]}
"""
BOUND_S = 10.0  # far above the configured bounds (1 s reads), far below a hold


def config_of(tmp: Path, **overrides: Any) -> GatewayConfig:
    data = merge(base_config(tmp), overrides)
    return parse_config(yaml.safe_dump(data), source="t.yaml", env=os.environ, base_dir=str(ROOT))


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/responses", json={"model": "demo", "input": "hi", **body}, headers=AUTH)


def events_of(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield from _guarded(tmp_path_factory, stack)


def _guarded(tmp_path_factory: pytest.TempPathFactory, stack: contextlib.ExitStack) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("faults")
    up = Upstream()
    up_url = stack.enter_context(serve(up.app()))
    (tmp / "policies").mkdir()
    (tmp / "policies" / "guard.yaml").write_text(GUARD)
    config = config_of(
        tmp,
        pipeline=["auth", "policy", "guardrails", "route"],
        policies={"paths": [str(tmp / "policies")]},
        providers={"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-up"}},
        models={
            "demo-errorevent": {"deployments": [{"provider": "mock", "model": "demo-errorevent-3"}]},
            "recorded": {"deployments": [{"provider": "up", "model": "recorded"}]},
        },
        responses={"max_chain": 5},
    )
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        yield client, up, tmp


def test_a_stream_the_client_leaves_is_not_stored(guarded: Any) -> None:
    client, _, tmp = guarded
    body = {"model": "slow-stream", "input": "tell me a long story " * 20, "stream": True}
    with client.stream("POST", "/v1/responses", json=body, headers=AUTH) as answer:
        request_id = answer.headers["x-gateway-request-id"]
        next(answer.iter_bytes())  # the first events, then the client leaves
    assert record_of(tmp / "gateway.db", request_id)["status"] == 499
    assert client.get(f"/v1/responses/resp_{request_id}", headers=AUTH).status_code == 404


def test_a_stream_the_upstream_breaks_ends_failed_and_is_not_stored(guarded: Any) -> None:
    client, _, _ = guarded
    answer = create(client, model="demo-errorevent", stream=True)
    events = events_of(answer.text)
    assert events[-1]["type"] == "response.failed"
    assert client.get(f"/v1/responses/{events[-1]['response']['id']}", headers=AUTH).status_code == 404


def test_a_stream_a_guardrail_blocks_ends_failed_and_is_not_stored(guarded: Any) -> None:
    client, _, _ = guarded
    answer = create(client, input="say forbidden things", stream=True)
    events = events_of(answer.text)
    assert events[-1]["type"] == "response.failed", events[-1]
    assert "forbidden" not in answer.text.split("response.failed")[0].replace("say forbidden things", "")
    assert client.get(f"/v1/responses/{events[-1]['response']['id']}", headers=AUTH).status_code == 404
    whole = create(client, input="say forbidden things")
    assert whole.status_code == 400
    assert whole.json()["error"]["code"] == "guardrail_blocked"


def test_a_chain_at_max_chain_goes_on_one_turn_longer_is_refused(guarded: Any) -> None:
    client, _, _ = guarded
    previous = None
    for n in range(6):  # the sixth turn brings back five
        answer = create(client, input=f"turn {n}", **({"previous_response_id": previous} if previous else {}))
        assert answer.status_code == 200, (n, answer.text)
        previous = answer.json()["id"]
    refused = create(client, input="one too many", previous_response_id=previous)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "previous_response_id"


def test_a_deleted_link_ends_the_history_there(guarded: Any) -> None:
    client, up, _ = guarded
    ids: list[str] = []
    for n in range(4):
        answer = create(
            client, model="recorded", input=f"link {n}", **({"previous_response_id": ids[-1]} if ids else {})
        )
        ids.append(answer.json()["id"])
    assert client.delete(f"/v1/responses/{ids[1]}", headers=AUTH).status_code == 200
    assert create(client, model="recorded", input="go on", previous_response_id=ids[3]).status_code == 200
    said = [m["content"] for m in up.requests[-1]["body"]["messages"] if m["role"] == "user"]
    assert said == ["link 2", "link 3", "go on"]  # turns 2 and 3: the chain ends at the deleted turn 1


def test_a_restart_keeps_the_conversation(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        first = create(client, input="remember 42").json()["id"]
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        answer = create(client, input="what number?", previous_response_id=first)
        assert answer.status_code == 200, answer.text
        assert client.get(f"/v1/responses/{first}", headers=AUTH).status_code == 200


def test_a_frozen_postgresql_fails_a_lookup_within_its_bound_and_delays_no_answer(tmp_path: Path) -> None:
    dsn = require_postgres()
    schema = f"gw_resp_{uuid.uuid4().hex[:10]}"
    try:
        with FaultyProxy.before(dsn) as proxy:
            config = config_of(
                tmp_path,
                telemetry={"store": f"{proxy.url(dsn)}?schema={schema}", "query_timeout_s": 1.0,
                           "write_timeout_s": 1.0},
            )  # fmt: skip
            with (
                running(config) as (url_a, gateway_a),
                running(config) as (url_b, _),
                httpx.Client(base_url=url_a, timeout=60) as a,
                httpx.Client(base_url=url_b, timeout=60) as b,
            ):
                first = create(a, input="remember 42").json()["id"]
                wait_until(lambda: not gateway_a.conversations._unsaved, 10)
                proxy.freeze()
                started = time.monotonic()
                looked_up = create(b, input="what number?", previous_response_id=first)
                assert looked_up.status_code == 503, looked_up.text
                assert time.monotonic() - started < BOUND_S
                read = b.get(f"/v1/responses/{first}", headers=AUTH)
                assert read.status_code == 503
                for _ in range(5):  # saves wait for the store in the background
                    started = time.monotonic()
                    assert create(a, input="more").status_code == 200
                    assert time.monotonic() - started < 0.9  # a save awaited would take the 1 s write timeout
                same_worker = create(a, input="what number?", previous_response_id=first)
                assert same_worker.status_code == 200  # from memory, the store frozen
                proxy.thaw()
                answer = create(b, input="what number?", previous_response_id=first)
                assert answer.status_code == 200, answer.text
    finally:
        drop_schema(dsn, schema)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _cut_upstream(scope: Any, receive: Any, send: Any) -> None:
    """An OpenAI-compatible stream cut between two events (model `cut`), or whole but without [DONE] (`nodone`)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    model = orjson.loads(body)["model"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    events = [_chunk({"role": "assistant", "content": "Hel"}), _chunk({"content": "lo"})]
    if model == "nodone":
        events.append(_chunk({}, "stop"))
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_an_upstream_stream_cut_between_two_events_fails_and_is_not_stored(tmp_path: Path) -> None:
    with serve(_cut_upstream) as up_url:
        config = config_of(
            tmp_path,
            providers={"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-up"}},
            models={name: {"deployments": [{"provider": "up", "model": name}]} for name in ("cut", "nodone")},
            routing={"retries": 0},
        )
        with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
            events = events_of(create(client, model="cut", stream=True).text)
            assert events[-1]["type"] == "response.failed"
            assert "ended before its finish_reason" in events[-1]["response"]["error"]["message"]
            assert client.get(f"/v1/responses/{events[-1]['response']['id']}", headers=AUTH).status_code == 404
            chat = client.post(
                "/v1/chat/completions",
                json={"model": "cut", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                headers=AUTH,
            )
            assert '"incomplete_stream"' in chat.text  # an error event, then [DONE]
            assert chat.text.rstrip().endswith("data: [DONE]")
            whole = events_of(create(client, model="nodone", stream=True).text)  # no [DONE], but a finish_reason
            assert whole[-1]["type"] == "response.completed"
            assert client.get(f"/v1/responses/{whole[-1]['response']['id']}", headers=AUTH).status_code == 200
