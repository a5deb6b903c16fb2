"""The request validator seen from the official SDKs: what OpenAI refuses is a BadRequestError naming the field
with OpenAI's code; what OpenAI accepts, edge values included, is served (drop-in is not broken)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from gateway.runtime import Gateway
from tests.conftest import KEY
from tests.integration.helpers import assert_sdk_error, sdk_client, user

pytestmark = pytest.mark.sdk

# (create() arguments, param, code)
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    "max_tokens -5": ({"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    "n 100000000": ({"n": 100_000_000}, "n", "integer_above_max_value"),
    "temperature 2.5": ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    "five stop sequences": ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    "content 12": ({"messages": [{"role": "user", "content": 12}]}, "messages[0].content", "invalid_type"),
    "a part whose type is a list": (
        {"messages": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}]},
        "messages[0].content[0].type",
        "invalid_type",
    ),
    "a tool message without its call id": (
        {"messages": [{"role": "tool", "content": "42"}]},
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    "a tool without a name": ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name",
                              "missing_required_parameter"),
}  # fmt: skip


@pytest.mark.parametrize(("arguments", "param", "code"), list(REFUSED.values()), ids=list(REFUSED))
def test_the_sdk_raises_bad_request_naming_the_field(
    shared_gateway: tuple[str, Gateway], arguments: dict[str, Any], param: str, code: str
) -> None:
    arguments = {"model": "demo", "messages": user("hi"), **arguments}
    with sdk_client(shared_gateway[0]) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**arguments)
    body = assert_sdk_error(caught.value, 400)
    assert (body["param"], body["code"], body["type"]) == (param, code, "invalid_request_error")


def test_edge_values_openai_accepts_are_served(shared_gateway: tuple[str, Gateway]) -> None:
    with sdk_client(shared_gateway[0]) as client:
        completion = client.chat.completions.create(
            model="demo",
            messages=[
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url",
                                                                             "image_url": {"url": PNG_URL}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
            max_tokens=1,
            n=128,
            temperature=2,
            top_p=0,
            presence_penalty=-2,
            frequency_penalty=2,
            stop=["a", "b", "c", "d"],
            logit_bias={"50256": -100, "1": 100},
            seed=2**63 - 1,
            logprobs=True,
            top_logprobs=20,
            user="u-1",
            metadata={"customer": "acme"},
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice="none",
            response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
            extra_body={"a_vendor_option": {"kept": True}},  # unknown fields pass through
        )  # fmt: skip
        assert completion.choices[0].message.content
        embedding = client.embeddings.create(
            model="demo-embedding", input=[[1, 2], [3]], dimensions=1, encoding_format="float"
        )
        assert len(embedding.data) == 2
        legacy = client.completions.create(model="demo", prompt=[1, 2, 3], max_tokens=0, echo=True, logprobs=5)
        assert legacy.choices


def test_the_anthropic_sdk_gets_anthropics_ranges(shared_gateway: tuple[str, Gateway]) -> None:
    # Newer SDKs leave the sampling options out of create()'s signature: they go as extra_body.
    messages: Any = [{"role": "user", "content": "x"}]
    with anthropic.Anthropic(base_url=shared_gateway[0], api_key=KEY, max_retries=0, timeout=10) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model="demo", max_tokens=10, messages=messages, extra_body={"temperature": 1.5})
        message = client.messages.create(
            model="demo", max_tokens=10, messages=messages, extra_body={"temperature": 1, "top_k": 0}
        )
    error = caught.value.response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("temperature: ")
    assert message.content


PNG_URL = "data:image/png;base64,iVBORw0KGgo="
