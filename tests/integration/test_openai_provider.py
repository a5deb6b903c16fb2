"""The OpenAI-compatible provider against a real upstream on loopback: keys, Azure's URL and header, the usage chunk
asked for on the client's behalf, model renaming, and the client's bytes forwarded as they are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.integration.helpers import RawUpstream, json_events, record_of, sdk_client, sse_payloads, user

pytestmark = pytest.mark.sdk

AUTH = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}


def headers_of(up: RawUpstream, index: int = -1) -> dict[str, str]:
    return dict(up.requests[index]["headers"])


# -- keys -----------------------------------------------------------------------------------------------------------


def test_provider_key_goes_upstream_and_gateway_key_never_does(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
        list(client.chat.completions.create(model="renamed", messages=user("hi"), stream=True))
        client.completions.create(model="gpt-4o-mini", prompt="hi")
        client.embeddings.create(model="gpt-4o-mini", input="hi", encoding_format="float")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="error-404", messages=user("hi"))

    assert [r["path"] for r in up.requests] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/chat/completions",
    ]
    for request in up.requests:
        headers = request["headers"]
        assert headers["authorization"] == "Bearer sk-upstream"
        assert "api-key" not in headers
        assert all(KEY not in value for value in headers.values())
        assert headers["content-type"] == "application/json"


def test_azure_deployment_url_and_api_key_header(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream]
) -> None:
    up_url, up = raw_upstream
    config = make_config(
        providers={"az": {"type": "azure", "base_url": up_url, "api_key": "az-key", "api_version": "2024-10-21"}},
        models={"gpt-4o": {"deployments": [{"provider": "az", "model": "my-gpt4o-deployment"}]}},
    )
    with running(config) as (url, _), sdk_client(url) as client:
        completion = client.chat.completions.create(model="gpt-4o", messages=user("hi"))
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=user("hi"), stream=True))

    assert completion.choices[0].message.content == "Hello there!"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert len(up.requests) == 2
    for request in up.requests:
        assert request["path"] == "/openai/deployments/my-gpt4o-deployment/chat/completions"
        assert request["query"] == {"api-version": "2024-10-21"}
        assert request["headers"]["api-key"] == "az-key"
        assert "authorization" not in request["headers"]
        assert all(KEY not in value for value in request["headers"].values())


# -- the usage chunk ------------------------------------------------------------------------------------------------


def test_usage_is_asked_upstream_and_stripped_from_the_client_stream(
    proxied: tuple[str, Gateway, RawUpstream], db_path: Path
) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=user("hi"), stream=True, extra_headers={"x-request-id": "strip-1"}
            )
        )

    assert up.requests[0]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there!"
    # The gateway still knows what the request cost: the upstream's usage, as the upstream reported it.
    record = record_of(db_path, "strip-1")
    assert (record["prompt_tokens"], record["completion_tokens"]) == (11, 3)
    assert (record["cached_tokens"], record["reasoning_tokens"]) == (5, 1)
    assert record["usage_source"] == "upstream"


def test_client_stream_options_are_kept_when_usage_is_added(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    body = {"model": "gpt-4o-mini", "messages": user("hi"), "stream": True, "stream_options": {"x_opt": 1}}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert up.requests[0]["body"]["stream_options"] == {"x_opt": 1, "include_usage": True}
    assert all("usage" not in event for event in json_events(response.text))


def test_client_that_asks_for_usage_gets_it_once(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=user("hi"), stream=True, stream_options={"include_usage": True}
            )
        )

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 3, 14)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 5
    assert up.requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_stream_without_upstream_usage_is_counted(proxied: tuple[str, Gateway, RawUpstream], db_path: Path) -> None:
    url, _, _ = proxied
    body = {"model": "nousage", "messages": user("hi"), "stream": True}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={**AUTH, "x-request-id": "count-1"})
    assert sse_payloads(response.text)[-1] == "[DONE]"
    record = record_of(db_path, "count-1", timeout=10)  # counting may load tiktoken's encoding the first time
    assert record["usage_source"] == "counted"
    assert record["completion_tokens"] > 0
    assert record["prompt_tokens"] > 0


# -- model renaming and the client's bytes --------------------------------------------------------------------------


def test_model_is_renamed_to_the_deployment_model(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        raw = client.chat.completions.with_raw_response.create(model="renamed", messages=user("hi"), temperature=0.5)
    completion = raw.parse()

    sent = up.requests[0]["body"]
    assert sent["model"] == "upstream-model-v2"
    assert sent["temperature"] == 0.5
    assert sent["messages"] == user("hi")
    assert completion.model == "upstream-model-v2"
    assert raw.headers["x-gateway-provider"] == "up"
    assert raw.headers["x-gateway-model"] == "upstream-model-v2"
    # The upstream's answer reaches the client as it came, usage details included.
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 5


ODD_BUT_VALID = (
    b'{ "messages" : [ {"role":"user", "content":"caf\\u00e9 \\ud83d\\ude00 \xe2\x82\xac"} ],\n'
    b'  "model":"gpt-4o-mini", "temperature": 1.50, "seed": 7, "x_unknown": {"a": [1, 2.0e0, null]} }'
)


@pytest.mark.parametrize(
    ("endpoint", "raw"),
    [
        ("chat/completions", ODD_BUT_VALID),
        ("chat/completions", ODD_BUT_VALID[:-2] + b', "stream": true, "stream_options": {"include_usage": true}}'),
        ("completions", b'{"prompt": ["a",  "b"], "model": "gpt-4o-mini", "max_tokens": 3}'),
        ("embeddings", b'{"input": "x",\t"model": "gpt-4o-mini", "encoding_format": "float"}'),
    ],
    ids=["chat", "chat-stream-with-usage", "completions", "embeddings"],
)
def test_unchanged_request_goes_upstream_byte_for_byte(
    proxied: tuple[str, Gateway, RawUpstream], endpoint: str, raw: bytes
) -> None:
    url, _, up = proxied
    response = httpx.post(f"{url}/v1/{endpoint}", content=raw, headers=AUTH)
    assert response.status_code == 200, response.text
    assert up.raw_bodies == [raw]


def test_changed_request_is_reserialised_with_everything_else_kept(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    raw = ODD_BUT_VALID.replace(b'"gpt-4o-mini"', b'"renamed"')
    response = httpx.post(f"{url}/v1/chat/completions", content=raw, headers=AUTH)
    assert response.status_code == 200
    (sent,) = up.raw_bodies
    assert sent != raw
    expected: dict[str, Any] = {**orjson.loads(raw), "model": "upstream-model-v2"}
    assert orjson.loads(sent) == expected
    assert orjson.loads(sent)["messages"][0]["content"] == "café 😀 €"
