"""Every error reaches the official SDK as its matching exception, in OpenAI's JSON shape, with the right status;
bad input gets a clear 4xx and never a stack trace."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.integration.helpers import (
    RawUpstream,
    assert_error_shape,
    assert_sdk_error,
    record_of,
    sdk_client,
    user,
)

pytestmark = pytest.mark.sdk

AUTH = {"authorization": f"Bearer {KEY}"}
FAULT_MODELS = {
    "demo-400": "demo-error-400",
    "demo-429": "demo-error-429",
    "demo-500": "demo-error-500",
    "demo-503": "demo-error-503",
    "demo-hang": "demo-hang",
}


@pytest.fixture
def faulty(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[str, Gateway]]:
    """The gateway with mock deployments that fail, and a small body limit and first-byte timeout."""
    models = {name: {"deployments": [{"provider": "mock", "model": model}]} for name, model in FAULT_MODELS.items()}
    config = make_config(models=models, server={"max_body_mb": 0.01}, routing={"timeouts": {"first_byte_s": 0.2}})
    with running(config) as server:
        yield server


# -- authentication -----------------------------------------------------------------------------------------------


def test_missing_key_is_401(gateway_server: tuple[str, Gateway]) -> None:
    url, _ = gateway_server
    body = {"model": "demo", "messages": user("hi")}
    for headers in ({}, {"authorization": "Bearer"}, {"authorization": f"Basic {KEY}"}):
        response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        error = assert_error_shape(response, 401, code="invalid_api_key")
        assert error["type"] == "authentication_error"
    assert_error_shape(httpx.get(f"{url}/v1/models"), 401, code="invalid_api_key")


def test_wrong_key_is_authentication_error(gateway_server: tuple[str, Gateway]) -> None:
    with sdk_client(gateway_server[0], key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="demo", messages=user("hi"))
        body = assert_sdk_error(caught.value, 401)
        assert body["type"] == "authentication_error"
        assert body["code"] == "invalid_api_key"
        assert "sk-wrong" not in caught.value.response.text  # the key is not echoed back

        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="demo-embedding", input="x")


def test_azure_style_api_key_header_is_accepted(gateway_server: tuple[str, Gateway]) -> None:
    url, _ = gateway_server
    body = {"model": "demo", "messages": user("hi")}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, headers={"api-key": KEY}).status_code == 200
    assert_error_shape(httpx.post(f"{url}/v1/chat/completions", json=body, headers={"api-key": "nope"}), 401)


# -- unknown models, URLs and methods ------------------------------------------------------------------------------


def test_unknown_model_is_not_found_with_code(client: openai.OpenAI) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: client.chat.completions.create(model="gpt-nonexistent", messages=user("hi")),
        lambda: client.chat.completions.create(model="gpt-nonexistent", messages=user("hi"), stream=True),
        lambda: client.completions.create(model="gpt-nonexistent", prompt="hi"),
        lambda: client.embeddings.create(model="gpt-nonexistent", input="hi"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        body = assert_sdk_error(caught.value, 404)
        assert body["code"] == "model_not_found"
        assert body["param"] == "model"
        assert body["type"] == "invalid_request_error"
        assert "gpt-nonexistent" in body["message"]


def test_unknown_url_and_wrong_method_are_json(gateway_server: tuple[str, Gateway]) -> None:
    url, _ = gateway_server
    error = assert_error_shape(httpx.get(f"{url}/v1/nothing-here", headers=AUTH), 404)
    assert "/v1/nothing-here" in error["message"]
    assert_error_shape(httpx.post(f"{url}/v2/chat/completions", headers=AUTH, json={}), 404)
    assert_error_shape(httpx.get(f"{url}/v1/chat/completions", headers=AUTH), 405)
    assert_error_shape(httpx.delete(f"{url}/v1/embeddings", headers=AUTH), 405)
    assert_error_shape(httpx.post(f"{url}/v1/models", headers=AUTH, json={}), 405)


def test_sdk_sees_unknown_route_as_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.get("/no/such/route", cast_to=object)
    assert_sdk_error(caught.value, 404)


# -- bad input ------------------------------------------------------------------------------------------------------

VALID = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}'
BAD_BODIES = {
    "broken json": (b'{"model": "demo", "messages": [', None),
    "trailing garbage": (VALID + b"}", None),
    "empty body": (b"", None),
    "a json array": (b"[1, 2]", None),
    "json null": (b"null", None),
    "invalid utf-8": (b'{"model": "demo", "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}', None),
    "lone surrogate": (b'{"model": "demo", "messages": [{"role": "user", "content": "\\ud800"}]}', None),
    "too deep": (b'{"model": "demo", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}", None),
    "max_tokens a string": (b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "x"}',
                            "max_tokens"),
    "max_tokens a bool": (b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": true}',
                          "max_tokens"),
    "messages not a list": (b'{"model": "demo", "messages": "hi"}', "messages"),
    "messages empty": (b'{"model": "demo", "messages": []}', "messages"),
    "message not an object": (b'{"model": "demo", "messages": ["hi"]}', "messages[0]"),
    "message without role": (b'{"model": "demo", "messages": [{"content": "hi"}]}', "messages[0].role"),
    "missing messages": (b'{"model": "demo"}', "messages"),
    "missing model": (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    "model a number": (b'{"model": 4, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    "stream a string": (b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
                        "stream"),
    "temperature a string": (b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], '
                             b'"temperature": "hot"}', "temperature"),
    "stream_options without stream": (b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], '
                                      b'"stream_options": {"include_usage": true}}', "stream_options"),
}  # fmt: skip


@pytest.mark.parametrize(("raw", "param"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_chat_bodies_are_400(shared_gateway: tuple[str, Gateway], raw: bytes, param: str | None) -> None:
    url, _ = shared_gateway
    headers = {**AUTH, "content-type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=raw, headers=headers)
    error = assert_error_shape(response, 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert response.headers["x-request-id"]


def test_bad_bodies_on_other_endpoints_are_400(gateway_server: tuple[str, Gateway]) -> None:
    url, _ = gateway_server
    cases = [
        ("completions", {"model": "demo"}, "prompt"),
        ("completions", {"model": "demo", "prompt": 7}, "prompt"),
        ("embeddings", {"model": "demo-embedding"}, "input"),
        ("embeddings", {"model": "demo-embedding", "input": "x", "dimensions": "8"}, "dimensions"),
        ("embeddings", {"model": "demo-embedding", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ]
    for endpoint, body, param in cases:
        response = httpx.post(f"{url}/v1/{endpoint}", json=body, headers=AUTH)
        assert assert_error_shape(response, 400)["param"] == param, (endpoint, body)


def test_sdk_raises_bad_request_for_wrong_types(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages=user("hi"), extra_body={"max_tokens": "x"})
    body = assert_sdk_error(caught.value, 400)
    assert body["param"] == "max_tokens"
    assert body["code"] == "invalid_type"


def test_body_over_the_limit_is_413(faulty: tuple[str, Gateway]) -> None:
    url, _ = faulty
    big = b'{"model": "demo", "messages": [{"role": "user", "content": "' + b"a" * 40_000 + b'"}]}'
    headers = {**AUTH, "content-type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=big, headers=headers)
    assert_error_shape(response, 413, code="request_too_large")

    def chunked() -> Iterator[bytes]:  # no content-length: the limit is enforced while reading
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    response = httpx.post(f"{url}/v1/chat/completions", content=chunked(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_error_shape(response, 413, code="request_too_large")

    small = {"model": "demo", "messages": user("a" * 1000)}
    assert httpx.post(f"{url}/v1/chat/completions", json=small, headers=AUTH).status_code == 200


def test_sdk_sees_413_as_api_status_error(faulty: tuple[str, Gateway]) -> None:
    with sdk_client(faulty[0]) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="demo", messages=user("a" * 40_000))
    assert assert_sdk_error(caught.value, 413)["code"] == "request_too_large"


# -- upstream faults from the mock provider -------------------------------------------------------------------------


def test_mock_faults_map_to_sdk_exceptions(faulty: tuple[str, Gateway]) -> None:
    with sdk_client(faulty[0]) as client:
        with pytest.raises(openai.RateLimitError) as rate:
            client.chat.completions.create(model="demo-429", messages=user("hi"))
        assert_sdk_error(rate.value, 429)
        assert rate.value.response.headers["retry-after"] == "1"
        assert rate.value.body["type"] == "rate_limit_error"  # type: ignore[index]

        with pytest.raises(openai.InternalServerError) as server:
            client.chat.completions.create(model="demo-500", messages=user("hi"))
        assert_sdk_error(server.value, 500)
        assert "retry-after" not in server.value.response.headers

        with pytest.raises(openai.InternalServerError) as unavailable:
            client.chat.completions.create(model="demo-503", messages=user("hi"), stream=True)
        assert_sdk_error(unavailable.value, 503)
        assert unavailable.value.response.headers["retry-after"] == "1"

        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="demo-400", messages=user("hi"))
        assert assert_sdk_error(bad.value, 400)["type"] == "invalid_request_error"
        assert bad.value.response.headers["x-gateway-provider"] == "mock"


def test_hang_times_out_with_504(faulty: tuple[str, Gateway]) -> None:
    with sdk_client(faulty[0]) as client:
        for stream in (False, True):
            # The hang never ends: only the gateway's timeout can answer before the client's own (a timeout error).
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="demo-hang", messages=user("hi"), stream=stream)
            assert isinstance(caught.value, openai.InternalServerError)
            body = assert_sdk_error(caught.value, 504)
            assert body["type"] == "timeout_error"
            assert body["code"] == "upstream_timeout"


# -- upstream faults from a real OpenAI-compatible server -----------------------------------------------------------


def test_upstream_errors_keep_status_and_message(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, _ = proxied
    with sdk_client(url) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="error-404", messages=user("hi"))
        body = assert_sdk_error(missing.value, 404)
        assert body == {"message": "upstream says 404", "type": "upstream_type", "param": None, "code": "up_code"}

        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="error-429", messages=user("hi"), stream=True)
        assert assert_sdk_error(limited.value, 429)["message"] == "upstream says 429"
        assert limited.value.response.headers["retry-after"] == "2"

        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="error-500", messages=user("hi"))
        assert assert_sdk_error(failed.value, 500)["message"] == "upstream says 500"


def test_upstream_non_json_error_is_502(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, _ = proxied
    with sdk_client(url) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="badjson", messages=user("hi"))
    body = assert_sdk_error(caught.value, 502)
    assert "<html>" not in body["message"]
    assert caught.value.response.headers["content-type"] == "application/json"


def test_upstream_error_with_a_non_object_json_body_keeps_its_status(
    proxied: tuple[str, Gateway, RawUpstream], db_path: Path
) -> None:
    url, _, _ = proxied
    with sdk_client(url) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="oddbody-503", messages=user("hi"), extra_headers={"x-request-id": "odd-1"}
        )
    assert assert_sdk_error(caught.value, 503)["type"] == "api_error"
    record = record_of(db_path, "odd-1")
    assert record["status"] == 503
    assert record["error_type"] == "upstream_rejected"  # the code is the provider's
    assert record["usage_source"] == "none"


def test_a_bug_in_the_gateway_is_a_500_in_openai_shape(
    gateway_server: tuple[str, Gateway], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, gateway = gateway_server

    async def broken_send(*args: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(gateway.providers["mock"], "send", broken_send)
    with sdk_client(url) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="demo", messages=user("hi"), extra_headers={"x-request-id": "bug-1"})
        body = assert_sdk_error(caught.value, 500)
        assert body["code"] == "internal_error"
        assert "secret" not in caught.value.response.text
        record = record_of(db_path, "bug-1")
        assert (record["status"], record["error_type"], record["error_domain"]) == (500, "internal_error", "gateway")
        # The gateway goes on serving.
        monkeypatch.undo()
        assert client.chat.completions.create(model="demo", messages=user("hi")).choices[0].message.content


def test_upstream_success_that_is_not_a_json_object_is_502(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, _ = proxied
    body = {"model": "oddbody-200", "messages": user("hi")}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
    assert assert_error_shape(response, 502)["code"] == "invalid_upstream_response"
    with sdk_client(url) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="oddbody-200", messages=user("hi"))
    assert_sdk_error(caught.value, 502)


def test_unreachable_upstream_is_502(make_config: Callable[..., GatewayConfig]) -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = make_config(
        providers={"down": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "sk-x"}},
        models={"down": {"deployments": [{"provider": "down", "model": "gpt-4o-mini"}]}},
    )
    with running(config) as (url, _), sdk_client(url) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="down", messages=user("hi"))
        assert assert_sdk_error(caught.value, 502)["code"] == "upstream_unavailable"
        assert "sk-x" not in caught.value.response.text


def test_slow_upstream_hits_first_byte_timeout(make_config: Callable[..., GatewayConfig], raw_upstream: Any) -> None:
    up_url, _ = raw_upstream
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-upstream"}},
        models={"slow": {"deployments": [{"provider": "up", "model": "slow-600"}]}},
        routing={"timeouts": {"first_byte_s": 0.15}, "retries": 0},  # a retry would be a second wait
    )
    with running(config) as (url, _), sdk_client(url) as client:
        # The upstream answers after 0.6 s: a 504 rather than its answer is the first-byte timeout at work.
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="slow", messages=user("hi"))
        assert assert_sdk_error(caught.value, 504)["code"] == "upstream_timeout"
