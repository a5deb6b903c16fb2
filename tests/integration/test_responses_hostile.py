"""The Responses API against a hostile client: bodies too large, too long, too deep or malformed, odd ids in
previous_response_id and in the path, another project's ids, a role that may not call it, and what the pipeline
sees of a Responses request (metadata for policies and the record). Fault injection on the store and streams is
in test_responses_faults.py."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from gateway.config import parse_config
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import record_of
from tests.servers import Upstream, serve

OTHER = "sk-other-project"
VIEWER = "sk-viewer"
POLICY = """
policies:
  - name: no-japanese-customers
    when: {field: metadata.Kunde, eq: "日本"}
    actions: {deny: {status: 403, code: customer_refused, message: refused by metadata}}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "meta.yaml").write_text(POLICY)
    up = Upstream()
    with serve(up.app()) as up_url:
        overrides = {
            "providers": {"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-up"}},
            # the deployment's model differs from the group's: the provider re-encodes the body it sends
            "models": {
                "renamed": {"deployments": [{"provider": "up", "model": "upstream-name"}]},
                "priced": {
                    "deployments": [{"provider": "mock", "model": "priced-1", "price": {"input": 1, "output": 2}}]
                },
            },
            "pipeline": ["auth", "policy", "route"],
            "policies": {"paths": [str(tmp / "policies")]},
            "auth": {
                "keys": [
                    {"name": "tester", "key": KEY, "project": "p1"},
                    {"name": "other", "key": OTHER, "project": "p2"},
                    {"name": "viewer", "key": VIEWER, "project": "p1", "role": "viewer"},
                ]
            },
        }
        config = parse_config(
            yaml.safe_dump(merge(base_config(tmp), overrides)), source="t.yaml", env=os.environ, base_dir=str(ROOT)
        )
        with running(config) as (url, _):
            yield url, tmp


def post(url: str, body: Any, key: str = KEY, path: str = "/v1/responses") -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json", "x-api-key": key}
    return httpx.post(f"{url}{path}", content=content, headers=headers, timeout=60)


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def created(url: str, key: str = KEY) -> str:
    answer = post(url, {"model": "demo", "input": "secret"}, key)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def nested(depth: int) -> bytes:
    """A JSON schema `depth` objects deep, as bytes (orjson writes at most 254 levels)."""
    inner = b'{"type":"string"}'
    for _ in range(depth):
        inner = b'{"type":"object","properties":{"a":' + inner + b"}}"
    return inner


DEEP_BODIES = {
    "responses": lambda schema, stream: (
        b'{"model":"%s","input":"hi","stream":%s,"tools":[{"type":"function","name":"f","parameters":' + schema + b"}]}"
    ),
    "chat/completions": lambda schema, stream: (
        b'{"model":"%s","stream":%s,"messages":[{"role":"user","content":"hi"}],'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":' + schema + b"}}]}"
    ),
    "messages": lambda schema, stream: (
        b'{"model":"%s","stream":%s,"max_tokens":16,"messages":[{"role":"user",'
        b'"content":"hi"}],"tools":[{"name":"f","input_schema":' + schema + b"}]}"
    ),
}


@pytest.mark.parametrize("endpoint", DEEP_BODIES)
@pytest.mark.parametrize("model", [b"demo", b"renamed"])
@pytest.mark.parametrize("stream", [b"false", b"true"])
@pytest.mark.parametrize("depth", [100, 130, 500])
def test_a_body_nested_deeper_than_the_gateway_re_encodes_is_a_400_never_a_500(
    srv: Any, endpoint: str, model: bytes, stream: bytes, depth: int
) -> None:
    url, _ = srv
    body = DEEP_BODIES[endpoint](nested(depth), stream) % (model, stream)
    answer = post(url, body, path=f"/v1/{endpoint}")
    assert answer.status_code in (200, 400), answer.text
    if depth < 120:  # two levels each, and the body around it
        assert answer.status_code == 200, answer.text


def test_a_request_without_a_key_is_refused_before_its_huge_body_is_read(srv: Any) -> None:
    # The client announces 64 MB and sends 1 KB of it: the 401 must come without the rest (were the gateway to wait
    # for the body, the read below would find nothing until its 30 s timeout, whatever the machine's speed).
    url, _ = srv
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (64 * 1024 * 1024) + b"x" * 1024
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 401"), head
    assert b"\r\nconnection: close" in head


def test_100k_input_items_are_answered_stored_and_paged(srv: Any) -> None:
    url, _ = srv
    items = [{"role": "user", "content": f"m{i}"} for i in range(100_000)]
    first = post(url, {"model": "demo", "input": items})
    assert first.status_code == 200, first.text[:300]
    rid = first.json()["id"]
    assert post(url, {"model": "demo", "input": "next", "previous_response_id": rid}).status_code == 200
    page = httpx.get(f"{url}/v1/responses/{rid}/input_items?limit=100&order=asc", headers=auth()).json()
    assert len(page["data"]) == 100
    assert page["has_more"] is True


def test_a_giant_tool_schema_goes_through(srv: Any) -> None:
    url, _ = srv
    properties = {f"p{i}": {"type": "string", "description": "d" * 100} for i in range(5000)}
    tools = [{"type": "function", "name": f"f{j}", "parameters": {"type": "object", "properties": properties}}
             for j in range(20)]  # fmt: skip
    assert post(url, {"model": "demo", "input": "hi", "tools": tools}).status_code == 200


ODD_IDS = ["x" * 100_000, "résp_日本", "resp_\x00abc", "resp_' OR 1=1 --", "'; DROP TABLE responses; --", " ", "%00"]


@pytest.mark.parametrize("previous", ODD_IDS)
def test_an_odd_previous_response_id_is_not_found(srv: Any, previous: str) -> None:
    url, _ = srv
    answer = post(url, {"model": "demo", "input": "hi", "previous_response_id": previous})
    assert answer.status_code == 404, answer.text[:300]
    assert answer.json()["error"]["code"] == "previous_response_not_found"
    assert len(answer.content) < 2000  # the id is not echoed whole


@pytest.mark.parametrize("path_id", ["resp_%00x", "r%C3%A9sp", "x" * 8000, "%27%20OR%201%3D1--", "%2F..%2Fx"])
def test_an_odd_id_in_the_path_is_not_found(srv: Any, path_id: str) -> None:
    url, _ = srv
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/input_items")):
        answer = httpx.request(method, f"{url}/v1/responses/{path_id}{suffix}", headers=auth())
        assert answer.status_code == 404, (method, suffix, answer.text[:300])
        assert len(answer.content) < 2000


@pytest.mark.parametrize("store", [1, 0, "true", [], {}])
def test_store_must_be_a_boolean(srv: Any, store: Any) -> None:
    url, _ = srv
    answer = post(url, {"model": "demo", "input": "hi", "store": store})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "store"


def test_store_null_is_the_default_and_keeps_the_response(srv: Any) -> None:
    url, _ = srv
    answer = post(url, {"model": "demo", "input": "hi", "store": None})
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/v1/responses/{answer.json()['id']}", headers=auth()).status_code == 200


def test_another_projects_ids_are_not_found_anywhere(srv: Any) -> None:
    url, _ = srv
    rid = created(url)
    for method, suffix in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
        assert httpx.request(method, f"{url}/v1/responses/{rid}{suffix}", headers=auth(OTHER)).status_code == 404
    answer = post(url, {"model": "demo", "input": "x", "previous_response_id": rid}, OTHER)
    assert answer.status_code == 404
    referenced = post(url, {"model": "demo", "input": [{"type": "item_reference", "id": f"in_{rid[5:]}_0"}]}, OTHER)
    assert referenced.status_code == 400
    assert httpx.get(f"{url}/v1/responses/{rid}", headers=auth()).status_code == 200  # still its project's


def test_a_viewer_may_neither_create_read_nor_delete_responses(srv: Any) -> None:
    url, _ = srv
    rid = created(url)
    assert post(url, {"model": "demo", "input": "hi"}, VIEWER).status_code == 403
    for method, suffix in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
        assert httpx.request(method, f"{url}/v1/responses/{rid}{suffix}", headers=auth(VIEWER)).status_code == 403
    assert httpx.get(f"{url}/v1/responses/{rid}", headers=auth()).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_metadata_reaches_policies_and_the_record_as_the_client_sent_it(srv: Any, stream: bool) -> None:
    url, tmp = srv
    metadata = {"Kunde": "日本", "Tier": "Gold", "note": "ünïcødé ✓"}
    refused = post(url, {"model": "demo", "input": "hi", "metadata": metadata, "stream": stream})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "customer_refused"
    metadata["Kunde"] = "日本人"
    served = post(url, {"model": "priced", "input": "hi there", "metadata": metadata, "stream": stream})
    assert served.status_code == 200
    record = record_of(Path(tmp) / "gateway.db", served.headers["x-gateway-request-id"])
    assert orjson.loads(record["metadata"]) == metadata
    assert orjson.loads(record["tags"])["api"] == "responses"
    assert record["prompt_tokens"] > 0
    assert record["completion_tokens"] > 0
    assert record["cost_usd"] > 0
