"""The official openai SDK, unchanged, against the gateway: chat, streams, tools, JSON mode, completions,
embeddings, models, and the fields the gateway does not know going upstream untouched."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import orjson
import pytest

from gateway.runtime import Gateway
from tests.integration.helpers import RawUpstream, async_sdk_client, sdk_client, user

pytestmark = pytest.mark.sdk

PROMPT = "hello gateway world"
ANSWER = "Mock answer: you said hello gateway world"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_whole_chat_completion_with_usage_and_gateway_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="demo", messages=user(PROMPT))
    completion = raw.parse()

    assert raw.status_code == 200
    assert completion.object == "chat.completion"
    assert completion.model == "demo-1"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == len(ANSWER.split())
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    request_id = raw.headers["x-request-id"]
    assert request_id
    assert completion.id == f"chatcmpl-{request_id}"  # the header names the request that was answered
    assert raw.headers["x-gateway-provider"] == "mock"
    assert raw.headers["x-gateway-model"] == "demo-1"
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0
    assert raw.headers["content-type"] == "application/json"


def test_answers_follow_the_request(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="demo", messages=user("one two"))
    second = client.chat.completions.create(
        model="demo", messages=[*user("ignored"), {"role": "assistant", "content": "ok"}, *user("three four")]
    )
    short = client.chat.completions.create(model="demo", messages=user(PROMPT), max_tokens=2)

    assert first.choices[0].message.content == "Mock answer: you said one two"
    assert second.choices[0].message.content == "Mock answer: you said three four"
    assert short.choices[0].message.content == "Mock answer:"
    assert short.usage is not None
    assert short.usage.completion_tokens == 2


def test_client_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=user(PROMPT), extra_headers={"X-Request-ID": "client-req.42"}
    )
    assert raw.headers["x-request-id"] == "client-req.42"
    # The record's id is the gateway's, in a header of its own; the mock's completion id is made from it.
    assert raw.parse().id == f"chatcmpl-{raw.headers['x-gateway-request-id']}"
    assert raw.headers["x-gateway-request-id"] != "client-req.42"

    # An id that could smuggle anything into logs is not echoed: the gateway's stands in for it.
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=user(PROMPT), extra_headers={"X-Request-ID": "not ok; <script>"}
    )
    assert raw.headers["x-request-id"] == raw.headers["x-gateway-request-id"]
    assert raw.headers["x-request-id"] not in ("", "not ok; <script>")

    # Errors carry it too.
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=user("x"), extra_headers={"X-Request-ID": "err-1"})
    assert caught.value.response.headers["x-request-id"] == "err-1"


def test_stream_reassembles_the_answer_without_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="demo", messages=user(PROMPT), stream=True))

    assert len(chunks) > 3  # really streamed, piece by piece
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no usage-only chunk with empty choices
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"


def test_stream_with_include_usage_ends_with_one_usage_chunk(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="demo", messages=user(PROMPT))
    chunks = list(
        client.chat.completions.create(
            model="demo", messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
        )
    )

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert whole.usage is not None
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == ANSWER


def test_stream_response_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="demo", messages=user(PROMPT), stream=True, extra_headers={"X-Request-ID": "stream-7"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "stream-7"
        assert response.headers["x-gateway-provider"] == "mock"
        assert response.headers["x-gateway-model"] == "demo-1"
        text = "".join(response.iter_text())
    assert text.rstrip().endswith("data: [DONE]")
    assert text.count("[DONE]") == 1


@pytest.mark.anyio
async def test_async_client_whole_and_streamed(gateway_server: tuple[str, Gateway]) -> None:
    async with async_sdk_client(gateway_server[0]) as client:
        whole = await client.chat.completions.create(model="demo", messages=user(PROMPT))
        stream = await client.chat.completions.create(
            model="demo", messages=user(PROMPT), stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

    assert whole.choices[0].message.content == ANSWER
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert [c.usage is not None for c in chunks].count(True) == 1
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_tool_call_then_tool_result_then_text(client: openai.OpenAI) -> None:
    messages: list[Any] = user("What is the weather in Paris?")
    first = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    second = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "Mock answer: you said What is the weather in Paris?"

    none = client.chat.completions.create(model="demo", messages=user("hi"), tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.content == "Mock answer: you said hi"


def test_streamed_tool_call_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="demo", messages=user("weather?"), tools=[WEATHER_TOOL], stream=True)
    )

    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) >= 1
    assert deltas[0].index == 0
    assert deltas[0].id == "call_mock_0"
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert orjson.loads(arguments) == {}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""


def test_json_mode_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="demo", messages=user("give me json"), response_format={"type": "json_object"}
    )
    content = whole.choices[0].message.content
    assert content is not None
    assert orjson.loads(content) == {"answer": "Mock answer: you said give me json"}

    chunks = list(
        client.chat.completions.create(
            model="demo", messages=user("give me json"), response_format={"type": "json_object"}, stream=True
        )
    )
    assert len(chunks) > 3
    assert orjson.loads("".join(c.choices[0].delta.content or "" for c in chunks)) == orjson.loads(content)


def test_legacy_completions(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="demo", prompt="say this", max_tokens=16)
    completion = raw.parse()

    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Mock answer: you said say this"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6  # one token a word
    assert raw.headers["x-gateway-provider"] == "mock"
    assert completion.id == f"cmpl-{raw.headers['x-request-id']}"


def test_streamed_legacy_completions(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="demo", prompt="say this", stream=True))
    assert len(chunks) > 1
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Mock answer: you said say this"


@pytest.mark.anyio
async def test_async_legacy_completions_and_embeddings(gateway_server: tuple[str, Gateway]) -> None:
    async with async_sdk_client(gateway_server[0]) as client:
        completion = await client.completions.create(model="demo", prompt="async please")
        embedding = await client.embeddings.create(model="demo-embedding", input="async please", dimensions=4)

    assert completion.choices[0].text == "Mock answer: you said async please"
    assert len(embedding.data[0].embedding) == 4


def test_embeddings_float_and_base64_agree(client: openai.OpenAI) -> None:
    texts = ["first text", "second text", "third"]
    floats = client.embeddings.create(model="demo-embedding", input=texts, dimensions=24, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it into floats itself.
    decoded = client.embeddings.create(model="demo-embedding", input=texts, dimensions=24)
    explicit = client.embeddings.create(model="demo-embedding", input=texts, dimensions=24, encoding_format="base64")

    assert floats.object == "list"
    assert floats.model == "demo-embed"
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.usage.prompt_tokens > 0
    assert floats.usage.total_tokens == floats.usage.prompt_tokens
    for f, d, e in zip(floats.data, decoded.data, explicit.data, strict=True):
        assert len(f.embedding) == 24
        assert len(d.embedding) == 24
        assert d.embedding == pytest.approx(f.embedding, abs=1e-6)
        encoded: object = e.embedding  # typed as floats, but asked for explicitly the SDK leaves it as it came
        assert isinstance(encoded, str)
        values = struct.unpack("<24f", base64.b64decode(encoded))
        assert list(values) == pytest.approx(f.embedding, abs=1e-6)
    assert floats.data[0].embedding != floats.data[1].embedding  # derived from the text
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0)

    default = client.embeddings.create(model="demo-embedding", input="one", encoding_format="float")
    assert len(default.data[0].embedding) == 16


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert sorted(m.id for m in models.data) == ["demo", "demo-embedding", "slow-stream"]
    assert all(m.object == "model" and m.owned_by == "gateway" for m in models.data)

    model = client.models.retrieve("demo")
    assert model.id == "demo"
    assert model.object == "model"

    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


UNKNOWN_FIELDS: dict[str, Any] = {
    "seed": 1234,
    "user": "end-user-9",
    "metadata": {"team": "search", "ticket": "A-1"},
    "logprobs": True,
    "top_logprobs": 2,
    "n": 2,
    "parallel_tool_calls": False,
}
VENDOR_FIELDS: dict[str, Any] = {
    "reasoning_effort": "low",
    "x_vendor_option": {"nested": [1, 2.5, None, "s"], "flag": True},
}


def test_unknown_fields_pass_through_untouched(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("hi"),
            tools=[WEATHER_TOOL],
            **UNKNOWN_FIELDS,
            extra_body=VENDOR_FIELDS,
        )
    assert completion.choices[0].message.content == "Hello there!"

    (request,) = up.requests
    body = request["body"]
    for name, value in {**UNKNOWN_FIELDS, **VENDOR_FIELDS}.items():
        assert body[name] == value, name
    assert body["tools"] == [WEATHER_TOOL]
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == user("hi")


def test_unknown_fields_pass_through_a_rewritten_stream_request(proxied: tuple[str, Gateway, RawUpstream]) -> None:
    url, _, up = proxied
    with sdk_client(url) as client:
        chunks = list(
            client.chat.completions.create(
                model="renamed", messages=user("hi"), stream=True, **UNKNOWN_FIELDS, extra_body=VENDOR_FIELDS
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"

    body = up.requests[0]["body"]
    # The gateway changed two fields (model, stream_options) and re-serialised the body: the rest survived.
    assert body["model"] == "upstream-model-v2"
    assert body["stream"] is True
    for name, value in {**UNKNOWN_FIELDS, **VENDOR_FIELDS}.items():
        assert body[name] == value, name
