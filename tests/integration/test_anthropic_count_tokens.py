"""The official anthropic SDK's `messages.count_tokens` against the gateway's POST /v1/messages/count_tokens: the
gateway's own count of the chat request the body becomes, for a caller that may use the model; errors in
Anthropic's shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.providers.anthropic.ingress.request import to_chat_request
from gateway.runtime import Gateway
from tests.conftest import KEY, running

pytestmark = pytest.mark.sdk

ADMIN = "sk-admin-bootstrap"
USER: Any = [{"role": "user", "content": "hello gateway world, how many tokens is this?"}]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def server(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[str, Gateway]]:
    with running(make_config(auth={"admin_key": ADMIN})) as running_server:
        yield running_server


def sdk(url: str, key: str = KEY, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10, **options)


def expected(gateway: Gateway, body: dict[str, Any]) -> int:
    """What the gateway counts for `body`: its chat request, with the encoding of `demo`'s deployment model."""
    return gateway.components.tokens.count_prompt("chat/completions", "demo-1", to_chat_request(body, counting=True))


def test_count_tokens_is_the_gateway_count_of_the_translated_request(server: tuple[str, Gateway]) -> None:
    url, gateway = server
    client = sdk(url)
    plain = client.messages.count_tokens(model="demo", messages=USER)
    assert plain.input_tokens == expected(gateway, {"model": "demo", "messages": USER}) > 0
    full: dict[str, Any] = {
        "model": "demo",
        "messages": USER,
        "system": "You are terse.",
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    counted = client.messages.count_tokens(**full)
    # The system prompt and the tools count; thinking, which the translation drops, does not.
    assert counted.input_tokens == expected(gateway, full) > plain.input_tokens


def test_the_key_may_come_as_a_bearer_token(server: tuple[str, Gateway]) -> None:
    url, _ = server
    client = anthropic.Anthropic(base_url=url, auth_token=KEY, max_retries=0, timeout=10)
    assert client.messages.count_tokens(model="demo", messages=USER).input_tokens > 0


def test_no_key_is_refused_in_anthropics_shape(server: tuple[str, Gateway]) -> None:
    url, _ = server
    with pytest.raises(anthropic.AuthenticationError) as raised:
        sdk(url, key="sk-wrong").messages.count_tokens(model="demo", messages=USER)
    assert raised.value.status_code == 401
    body = raised.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert raised.value.request_id == raised.value.response.headers["x-gateway-request-id"]
    response = httpx.post(f"{url}/v1/messages/count_tokens", json={"model": "demo", "messages": USER})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_bad_body_is_refused_with_the_field_named(server: tuple[str, Gateway]) -> None:
    url, _ = server
    client = sdk(url)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.count_tokens(model="demo", messages=[])
    error = raised.value.response.json()["error"]
    assert error == {"type": "invalid_request_error", "message": "messages: At least one message is required"}
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.0\.role"):
        client.messages.count_tokens(model="demo", messages=[{"role": "robot", "content": "hi"}])
    response = httpx.post(f"{url}/v1/messages/count_tokens", content=b"{not json", headers={"x-api-key": KEY})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    # max_tokens is not needed, and not refused when sent
    assert client.messages.count_tokens(model="demo", messages=USER, extra_body={"max_tokens": 5}).input_tokens > 0


def test_an_unknown_model_is_not_found(server: tuple[str, Gateway]) -> None:
    url, _ = server
    with pytest.raises(anthropic.NotFoundError) as raised:
        sdk(url).messages.count_tokens(model="no-such-model", messages=USER)
    assert raised.value.response.json()["error"] == {"type": "not_found_error", "message": "model: no-such-model"}


def test_a_model_the_key_may_not_use_is_refused(server: tuple[str, Gateway]) -> None:
    url, _ = server
    made = httpx.post(
        f"{url}/admin/keys",
        json={"project": "p1", "allowed_models": ["demo"]},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    limited = sdk(url, key=made.json()["key"])
    assert limited.messages.count_tokens(model="demo", messages=USER).input_tokens > 0
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        limited.messages.count_tokens(model="demo-embedding", messages=USER)
    assert raised.value.response.json()["error"]["type"] == "permission_error"
    viewer = httpx.post(
        f"{url}/admin/keys", json={"project": "p1", "role": "viewer"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk(url, key=viewer.json()["key"]).messages.count_tokens(model="demo", messages=USER)
