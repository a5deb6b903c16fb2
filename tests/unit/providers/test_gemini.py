"""The Gemini provider: translations checked on Google's documented requests and recorded answers
(tests/fixtures/gemini), whole and streamed, with tools and images; then the official openai SDK through the
gateway in front of a fake Gemini upstream on loopback, for Google AI and Vertex AI base URLs."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import GatewayConfig, ProviderConfig
from gateway.context import Usage
from gateway.providers.base import UnsupportedRequest
from gateway.providers.gemini.embeddings import (
    embed_request,
    embedding_inputs,
    embeddings_of,
    estimate_tokens,
    openai_embeddings,
    vertex_embed_request,
)
from gateway.providers.gemini.errors import rejected
from gateway.providers.gemini.provider import GeminiProvider, is_vertex
from gateway.providers.gemini.schema import gemini_schema
from gateway.providers.gemini.stream import StreamTranslator, event_decoder as EventDecoder
from gateway.providers.gemini.translate import (
    SKIP_SIGNATURE,
    finish_reason,
    prompt_block,
    signature_of,
    to_gemini,
    to_openai,
    tool_call_id,
    usage_of,
)
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.servers import serve

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gemini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def answer_signature() -> str:
    signature: str = fixture("response_function_call_thinking.json")["candidates"][0]["content"]["parts"][1][
        "thoughtSignature"
    ]
    return signature


def stream_signature() -> str:
    events = EventDecoder().feed((FIXTURES / "stream_function_call_thinking.sse").read_bytes())
    signature: str = orjson.loads(events[-1])["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    return signature


# -- request ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "request_function_calling",
        "request_function_response",
        "request_system_multiturn",
        "request_tool_config",
        "request_json_mode",
        "request_vision",
    ],
)
def test_documented_requests(name: str) -> None:
    assert to_gemini(fixture(f"{name}.openai.json")) == fixture(f"{name}.gemini.json")


def test_consecutive_turns_merge_and_system_messages_are_hoisted() -> None:
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "P"}'}}
        for i in (1, 2)
    ]
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris"},
        {"role": "user", "content": [{"type": "text", "text": "and in Rome?"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": '{"celsius": 18}'}]},
        {"role": "user", "content": "Which is warmer?"},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
    ]
    body = to_gemini({"messages": messages, "tools": [WEATHER_TOOL]})
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    call = {"functionCall": {"name": "get_weather", "args": {"location": "P"}}}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris"}, {"text": "and in Rome?"}]},
        # only the first call of a turn carries a signature; this history has none of its own
        {"role": "model", "parts": [{"text": "Checking."}, {**call, "thoughtSignature": SKIP_SIGNATURE}, call]},
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "12 C"}}},
                {"functionResponse": {"name": "get_weather", "response": {"celsius": 18}}},
                {"text": "Which is warmer?"},
            ],
        },
    ]


def test_sampling_fields_are_translated_and_the_rest_dropped() -> None:
    body = to_gemini(
        {
            "messages": user("hi"),
            "max_tokens": 50,
            "max_completion_tokens": 100,
            "temperature": 1.7,
            "top_p": 0.9,
            "seed": 7,
            "stop": "END",
            "n": 2,
            "presence_penalty": 0.5,
            "frequency_penalty": 0,  # the default: not sent, since some models refuse the field
            "reasoning_effort": "medium",
            "logprobs": True,
            "user": "u-42",
            "metadata": {"tag": "x"},
            "parallel_tool_calls": False,
        }
    )
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {
            "maxOutputTokens": 100,  # max_completion_tokens wins, as it does at OpenAI
            "temperature": 1.7,
            "topP": 0.9,
            "seed": 7,
            "presencePenalty": 0.5,
            "stopSequences": ["END"],
            "candidateCount": 2,
            "thinkingConfig": {"thinkingBudget": 8192},
        },
    }


@pytest.mark.parametrize(
    ("effort", "budget"), [("none", 0), ("minimal", 1024), ("low", 1024), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort_becomes_the_documented_thinking_budget(effort: str, budget: int) -> None:
    config = to_gemini({"messages": user("hi"), "reasoning_effort": effort})["generationConfig"]
    assert config == {"thinkingConfig": {"thinkingBudget": budget}}


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(tool_choice: Any, expected: dict[str, Any] | None) -> None:
    body = to_gemini({"messages": user("hi"), "tools": [WEATHER_TOOL], "tool_choice": tool_choice})
    assert body.get("toolConfig") == ({"functionCallingConfig": expected} if expected else None)
    assert "toolConfig" not in to_gemini({"messages": user("hi"), "tool_choice": "auto"})  # no tools, no config


def test_strict_openai_tool_schemas_are_rewritten_to_geminis_subset() -> None:
    parameters = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "location": {"type": "string", "format": "uri", "description": "Where"},
            "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", None]},
            "when": {"anyOf": [{"$ref": "#/$defs/Day"}, {"type": "null"}]},
            "days": {"type": "array", "items": {"type": "integer", "const": 3}},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
            "either": {"oneOf": [{"type": "string"}, {"type": "number", "format": "double"}]},
        },
        "required": ["location", "unit", "ghost"],
        "additionalProperties": False,
        "$defs": {"Day": {"type": "string", "format": "date-time", "title": "Day"}},
    }
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters, "strict": True}}
    declaration = to_gemini({"messages": user("hi"), "tools": [tool]})["tools"][0]["functionDeclarations"][0]
    assert declaration == {
        "name": "f",
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "location": {"type": "STRING", "description": "Where"},  # uri: a format the subset refuses
                "unit": {"type": "STRING", "nullable": True, "enum": ["celsius", "fahrenheit"]},
                "when": {"type": "STRING", "format": "date-time", "title": "Day", "nullable": True},
                "days": {"type": "ARRAY", "items": {"type": "INTEGER", "enum": ["3"]}},
                "extra": {"type": "OBJECT"},
                "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER", "format": "double"}]},  # oneOf, loosened
            },
            "required": ["location", "unit"],  # Gemini refuses a required name that is not a property
        },
    }


def test_recursive_schemas_are_cut_and_implied_types_made_explicit() -> None:
    schema = {
        "$ref": "#/definitions/Node",
        "definitions": {
            "Node": {
                "properties": {"name": {"enum": ["a", "b"]}, "children": {"items": {"$ref": "#/definitions/Node"}}}
            }
        },
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "enum": ["a", "b"]},
            "children": {"type": "ARRAY", "items": {"type": "OBJECT"}},  # the recursion, cut
        },
    }


def test_json_schema_response_format_becomes_a_response_schema_with_property_ordering() -> None:
    schema = {
        "type": "object",
        "properties": {"recipe_name": {"type": "string"}, "minutes": {"type": "integer"}},
        "required": ["recipe_name", "minutes"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "recipe", "schema": schema, "strict": True}}
    config = to_gemini({"messages": user("A recipe"), "response_format": response_format})["generationConfig"]
    assert config == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"recipe_name": {"type": "STRING"}, "minutes": {"type": "INTEGER"}},
            "required": ["recipe_name", "minutes"],
            "propertyOrdering": ["recipe_name", "minutes"],  # Gemini 2.0 keeps keys in this order only
        },
    }


def test_audio_files_and_images_become_inline_or_file_data() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": "aGk="}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.webp"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo?size=large"}},
    ]
    parts = to_gemini({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGk="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "gs://bucket/cat.webp"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo?size=large"}},  # a guess
    ]


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]},
            "messages[0].content[0].file",
        ),
        ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": user("hi"), "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"messages": user("hi"), "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": user("hi"), "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_what_gemini_cannot_express_is_refused(request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedRequest) as info:
        to_gemini(request_body)
    assert info.value.param == param


def test_malformed_tool_arguments_are_kept_as_text() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    body = to_gemini({"messages": [{"role": "assistant", "tool_calls": [call]}]})
    assert body["contents"][0]["parts"][0]["functionCall"] == {"name": "f", "args": {"arguments": "{not json"}}


def test_thought_signatures_ride_in_tool_call_ids() -> None:
    signature = answer_signature()
    call_id = tool_call_id("call_ab12_0", signature)
    assert call_id.startswith("call_ab12_0_ts_")
    assert set(call_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert signature_of(call_id) == signature  # exactly as Gemini gave it
    assert signature_of("call_ab12_0") is None
    assert signature_of("toolu_01_ts_abc") is None  # another provider's id is left alone
    assert tool_call_id("call_1", None) == "call_1"


# -- whole answer ----------------------------------------------------------------------------------------------------


def test_documented_text_answer() -> None:
    answer = to_openai(fixture("response_text.json"), "gemini-deployment", created=1700000000, token="t1")
    assert answer == {
        "id": "chatcmpl-t1",  # this answer has no responseId
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gemini-2.0-flash",  # modelVersion
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Google's headquarters, also known as the Googleplex, is located in "
                    "**Mountain View, California**.\n",
                    "refusal": None,
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 22,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    ChatCompletion.model_validate(answer)  # the SDK's own type accepts it


def test_documented_function_call_with_thinking() -> None:
    response = fixture("response_function_call_thinking.json")
    answer = to_openai(response, "m", created=1, token="t1")
    assert answer["id"] == "38CHaLjMG6TujrEPtvTiuQk"
    choice = answer["choices"][0]
    assert choice["message"]["content"] is None  # the thought summary is not the answer
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert signature_of(call["id"]) == answer_signature()
    assert answer["usage"]["completion_tokens"] == 8 + 501  # thoughts are completion tokens at OpenAI
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 501}
    ChatCompletion.model_validate(answer)


def test_documented_parallel_calls_get_distinct_ids() -> None:
    answer = to_openai(fixture("response_parallel_calls.json"), "gemini-2.0-flash", created=1, token="t1")
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_t1_0", "call_t1_1", "call_t1_2"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [
        {"y": 1, "x": 2},
        {"y": 3, "x": 4},
        {"y": 5, "x": 6},
    ]
    assert answer["model"] == "gemini-2.0-flash"  # no modelVersion: the deployment's model
    assert "usage" not in answer


def test_documented_usage_counts_cached_tokens_in_the_prompt() -> None:
    metadata = fixture("response_implicit_caching.json")["usageMetadata"]
    assert usage_of(metadata) == Usage(
        prompt_tokens=12013, completion_tokens=15 + 73, cached_tokens=11243, reasoning_tokens=73
    )
    assert usage_of({"promptTokenCount": 5, "toolUsePromptTokenCount": 3}).prompt_tokens == 8


def test_documented_safety_finish() -> None:
    choice = to_openai(fixture("response_finish_safety.json"), "m", created=1, token="t")["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == "Safety error incoming in 5, 4, 3, 2..."


@pytest.mark.parametrize(
    ("reason", "tools", "finish"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        (None, True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),  # cut short, as OpenAI says too
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
    ],
)
def test_finish_reasons(reason: str | None, tools: bool, finish: str) -> None:
    assert finish_reason(reason, tools) == finish


def test_documented_prompt_block() -> None:
    assert prompt_block(fixture("response_prompt_blocked.json")) == (
        "The prompt was blocked by Gemini's safety filters (SAFETY): Reasons"
    )
    assert prompt_block({"candidates": [], "promptFeedback": {"blockReasonMessage": "Message"}}) is not None
    assert prompt_block(fixture("response_text.json")) is None


# -- stream ----------------------------------------------------------------------------------------------------------


def translate_stream(name: str, piece: int = 0) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    """The chunks for a recorded stream, fed whole or in pieces of `piece` bytes, finish included if complete."""
    raw = (FIXTURES / name).read_bytes()
    decoder = EventDecoder()
    pieces = [raw[i : i + piece] for i in range(0, len(raw), piece)] if piece else [raw]
    payloads = [p for chunk in pieces for p in decoder.feed(chunk)] + decoder.flush()
    translator = StreamTranslator("gemini-deployment", 1700000000, "t1")
    out = translator.feed_all(payloads)
    if not translator.failed and translator.complete:
        out += translator.finish()
    return translator, [orjson.loads(chunk) for chunk in out]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


@pytest.mark.parametrize("piece", [0, 7])
def test_documented_text_stream(piece: int) -> None:
    translator, chunks = translate_stream("stream_text.sse", piece)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["model"] == "gemini-2.0-flash"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [
        "The",
        " capital of Wyoming",
        " is **Cheyenne**.\n",
    ]
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 10,  # the last usageMetadata: Gemini's counts are cumulative
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert len(chunks) == 6
    assert translator.usage == Usage(prompt_tokens=7, completion_tokens=10)


def test_documented_function_call_stream_with_thinking() -> None:
    _, chunks = translate_stream("stream_function_call_thinking.sse")
    assert all(c["id"] == "48SHaPHpHKbG-8YPtZCawAk" for c in chunks)
    assert text_of(chunks) == ""  # the thought summaries stay out
    deltas = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(deltas) == 1
    [call] = deltas[0]
    assert call["index"] == 0
    assert call["type"] == "function"
    assert call["function"] == {"name": "now", "arguments": "{}"}  # whole, in one delta
    assert call["id"].startswith("call_t1_0_ts_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 6 + 168
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 168}


def test_documented_vertex_function_call_stream_without_usage() -> None:
    translator, chunks = translate_stream("stream_function_call.sse")
    assert chunks[0]["model"] == "gemini-deployment"  # no modelVersion in this stream
    call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert orjson.loads(call["function"]["arguments"]) == {"city": "San Jose"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # and no usage chunk after it
    assert translator.usage is None


def test_documented_blocked_prompt_stream_becomes_an_error_payload() -> None:
    translator, chunks = translate_stream("stream_prompt_blocked.sse")
    assert translator.failed
    assert chunks == [
        {
            "error": {
                "message": "The prompt was blocked by Gemini's safety filters (SAFETY).",
                "type": "invalid_request_error",
                "param": None,
                "code": "content_policy_violation",
            }
        }
    ]


def test_documented_error_after_the_events_is_not_lost() -> None:
    translator, chunks = translate_stream("stream_error_mid_stream.sse")
    assert translator.failed
    assert text_of(chunks[:-1]) == "First Second "
    assert chunks[-1] == {
        "error": {"message": "The operation was cancelled.", "type": "api_error", "param": None, "code": None}
    }


def test_a_finish_reason_repeated_on_every_event_finishes_once() -> None:
    # Older models put finishReason STOP on every event of a stream (the cookbook's streaming quickstart shows it).
    events = [
        {"candidates": [{"content": {"parts": [{"text": t}], "role": "model"}, "finishReason": "STOP"}]} for t in "ab"
    ]
    translator = StreamTranslator("gemini-pro", 1, "t")
    chunks = [orjson.loads(c) for c in translator.feed_all([orjson.dumps(e) for e in events]) + translator.finish()]
    assert text_of(chunks) == "ab"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]


def test_candidates_stream_as_choices() -> None:
    events = [
        {
            "candidates": [
                {"index": 0, "content": {"parts": [{"text": "A"}]}},
                {"index": 1, "content": {"parts": [{"text": "B"}]}},
            ]
        },
        {"candidates": [{"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}]},
        {"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}]},
    ]
    translator = StreamTranslator("m", 1, "t")
    chunks = [orjson.loads(c) for c in translator.feed_all([orjson.dumps(e) for e in events]) + translator.finish()]
    by_choice: dict[int, str] = {0: "", 1: ""}
    for chunk in chunks:
        by_choice[chunk["choices"][0]["index"]] += chunk["choices"][0]["delta"].get("content") or ""
    assert by_choice == {0: "Aa", 1: "Bb"}
    assert {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks[-2:]} == {1: "length", 0: "stop"}


def test_an_unfinished_stream_is_not_complete() -> None:
    raw = (FIXTURES / "stream_text.sse").read_bytes()
    cut = raw[: raw.rindex(b"data:")]
    decoder = EventDecoder()
    translator = StreamTranslator("m", 1, "t")
    translator.feed_all(decoder.feed(cut) + decoder.flush())
    assert not translator.complete


def test_event_decoder_handles_crlf_and_comments() -> None:
    decoder = EventDecoder()
    assert decoder.feed(b': keep-alive\r\n\r\ndata: {"a":1}\r\n\r\ndata: {"b"') == [b'{"a":1}']
    assert decoder.feed(b":2}") == []
    assert decoder.flush() == [b'{"b":2}']


# -- embeddings ------------------------------------------------------------------------------------------------------


def test_documented_batch_embed_request() -> None:
    texts = embedding_inputs(fixture("request_embed.openai.json")["input"])
    assert embed_request(texts, "gemini-embedding-001", None) == fixture("request_embed.gemini.json")
    with_dimensions = embed_request(["hi"], "models/gemini-embedding-001", 256)
    assert with_dimensions["requests"] == [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 256}
    ]
    assert vertex_embed_request(["a", "b"], 64) == {
        "instances": [{"content": "a"}, {"content": "b"}],
        "parameters": {"outputDimensionality": 64},
    }


def test_token_arrays_cannot_be_embedded() -> None:
    assert embedding_inputs("one") == ["one"]
    with pytest.raises(UnsupportedRequest) as info:
        embedding_inputs([[1, 2, 3]])
    assert info.value.param == "input"


def test_embedding_answers_and_their_token_counts() -> None:
    vectors, tokens = embeddings_of(fixture("embed_batch.json"))
    assert len(vectors) == 3
    assert vectors[0][:2] == [-0.022374554, -0.004560777]
    assert tokens is None  # Google AI gives none: the provider estimates
    assert estimate_tokens(["What is the meaning of life?", "abcd", ""]) == 7 + 1 + 0
    vectors, tokens = embeddings_of(fixture("embed_vertex_predict.json"))
    assert (len(vectors), tokens) == (2, 7 + 10)


def test_base64_embeddings_are_little_endian_float32_like_openais() -> None:
    answer = openai_embeddings([[0.5, -1.25]], "gemini-embedding-001", 3, as_base64=True)
    assert struct.unpack("<2f", base64.b64decode(answer["data"][0]["embedding"])) == (0.5, -1.25)
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert openai_embeddings([[0.5]], "m", 1, as_base64=False)["data"] == [
        {"object": "embedding", "index": 0, "embedding": [0.5]}
    ]


# -- errors, URLs and headers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "expected_status", "kind", "code", "param"),
    [
        ("error_api_key.json", 400, 401, "authentication_error", "invalid_api_key", None),
        ("error_quota_exceeded.json", 429, 429, "rate_limit_error", "rate_limit_exceeded", None),
        ("error_unknown_model.json", 404, 404, "invalid_request_error", "model_not_found", "model"),
        ("error_context_length.json", 400, 400, "invalid_request_error", "context_length_exceeded", "messages"),
    ],
)
def test_documented_errors(
    name: str, status: int, expected_status: int, kind: str, code: str, param: str | None
) -> None:
    body = (FIXTURES / name).read_bytes()
    error = rejected("gem", status, body, None)
    assert error.status_code == expected_status
    assert error.message == fixture(name)["error"]["message"]
    assert error.to_dict()["error"] == {"message": error.message, "type": kind, "param": param, "code": code}
    assert "key1234" not in error.to_json().decode()  # Google's DebugInfo quotes the key: never passed on
    # streamGenerateContent wraps the same error in an array
    assert rejected("gem", status, b"[" + body + b"]", None).to_dict() == error.to_dict()


def test_retry_info_becomes_retry_after() -> None:
    error = {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.2s"}]}  # fmt: skip
    assert rejected("gem", 429, orjson.dumps({"error": error}), None).headers == {"retry-after": "37"}
    assert rejected("gem", 429, orjson.dumps({"error": error}), "5").headers == {"retry-after": "5"}  # the header wins
    assert (
        rejected("gem", 503, b"<html>unavailable</html>", None).message == "The upstream provider 'gem' answered 503."
    )


@pytest.mark.parametrize(
    ("base_url", "vertex"),
    [
        ("https://generativelanguage.googleapis.com/v1beta", False),
        ("https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google", True),
        ("https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google", True),
        ("https://proxy.internal/vertex/v1/projects/p/locations/l/publishers/google", True),
        ("https://proxy.internal/gemini/v1beta", False),
        ("https://example.com/?next=aiplatform.googleapis.com", False),
    ],
)
def test_vertex_is_told_by_host_or_path(base_url: str, vertex: bool) -> None:
    assert is_vertex(base_url) is vertex


def test_urls_and_headers() -> None:
    google = GeminiProvider("gem", ProviderConfig(type="gemini", api_key="g-key"))
    assert google.url("gemini-2.0-flash", "generateContent") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    )
    assert google.url("models/gemini-2.0-flash", "generateContent").endswith("/models/gemini-2.0-flash:generateContent")
    assert google.headers == {"content-type": "application/json", "x-goog-api-key": "g-key"}
    base = "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/google/"
    config = ProviderConfig(type="gemini", base_url=base, api_key="ya29.t", headers={"Authorization": "x", "X-A": "1"})
    vertex = GeminiProvider("vtx", config)
    assert vertex.url("gemini-2.0-flash", "streamGenerateContent?alt=sse") == (
        f"{base.rstrip('/')}/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    )
    assert vertex.headers == {"content-type": "application/json", "authorization": "Bearer ya29.t", "x-a": "1"}


# -- end to end: the openai SDK, the gateway, a fake Gemini ----------------------------------------------------------


class FakeGemini:
    """Answers Gemini's REST methods with the recorded fixtures; the last user text steers it: `error-429`,
    `blocked`, `truncate` (a stream without its last event); a request with tools gets the function call."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        path = request.url.path
        self.requests.append({"path": path, "query": dict(request.query_params), "headers": dict(request.headers),
                              "body": body})  # fmt: skip
        if path.endswith(":batchEmbedContents"):
            embeddings = fixture("embed_batch.json")["embeddings"]
            return JSONResponse({"embeddings": embeddings[: len(body["requests"])]})
        if path.endswith(":predict"):
            return JSONResponse(
                {"predictions": fixture("embed_vertex_predict.json")["predictions"][: len(body["instances"])]}
            )
        last = body["contents"][-1]["parts"][-1].get("text")
        stream = path.endswith(":streamGenerateContent")
        if last == "error-429":
            error = fixture("error_quota_exceeded.json")
            error["error"]["details"].append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"})
            return JSONResponse([error] if stream else error, status_code=429)
        if last == "blocked":
            name = "stream_prompt_blocked.sse" if stream else "response_prompt_blocked.json"
        elif "tools" in body and last is not None:
            name = "stream_function_call_thinking.sse" if stream else "response_function_call_thinking.json"
        else:
            name = "stream_text.sse" if stream else "response_text.json"
        content = (FIXTURES / name).read_bytes()
        if last == "truncate":
            content = content[: content.rindex(b"data:")]
        return Response(content, media_type="text/event-stream" if stream else "application/json")


@pytest.fixture
def gemini(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[openai.OpenAI, FakeGemini, Gateway]]:
    fake = FakeGemini()
    with serve(fake.app()) as fake_url:
        vertex_base = f"{fake_url}/v1/projects/p/locations/us-central1/publishers/google"
        config = make_config(
            providers={
                "gem": {"type": "gemini", "base_url": f"{fake_url}/v1beta", "api_key": "g-key"},
                "vertex": {"type": "gemini", "base_url": vertex_base, "api_key": "ya29.vertex-token"},
            },
            models={
                "gemini-2.0-flash": {"deployments": [{"provider": "gem", "model": "gemini-2.0-flash"}]},
                "gemini-embedding": {"deployments": [{"provider": "gem", "model": "gemini-embedding-001"}]},
                "vertex-flash": {"deployments": [{"provider": "vertex", "model": "gemini-2.0-flash"}]},
                "vertex-embedding": {"deployments": [{"provider": "vertex", "model": "text-embedding-005"}]},
            },
            routing={"retries": 0},  # each upstream error reaches the client as it came, once
        )
        with running(config) as (url, gateway):
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10)
            with client:
                yield client, fake, gateway


def assert_google_ai_auth(headers: dict[str, str]) -> None:
    assert headers["x-goog-api-key"] == "g-key"
    assert "authorization" not in headers
    assert all(KEY not in value for value in headers.values())  # the gateway key never goes upstream


@pytest.mark.sdk
def test_sdk_whole_answer(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    answer = client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Where is Google?"}],
        max_tokens=64,
    )
    assert (
        answer.choices[0].message.content
        == fixture("response_text.json")["candidates"][0]["content"]["parts"][0]["text"]
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gemini-2.0-flash"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 22)
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["query"] == {}  # the key goes in a header, never in the URL
    assert sent["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "Where is Google?"}]}],
        "systemInstruction": {"parts": [{"text": "Be kind."}]},
        "generationConfig": {"maxOutputTokens": 64},
    }
    assert_google_ai_auth(sent["headers"])


@pytest.mark.sdk
def test_sdk_streamed_answer_is_reassembled(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    stream = client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=user("Capital of Wyoming?"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "The capital of Wyoming is **Cheyenne**.\n"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 10)
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert sent["query"] == {"alt": "sse"}
    assert_google_ai_auth(sent["headers"])

    # Without include_usage, the usage chunk is the relay's to strip.
    plain = list(client.chat.completions.create(model="gemini-2.0-flash", messages=user("Capital?"), stream=True))
    assert all(c.usage is None for c in plain)

    # A stream cut before its finishReason ends with an error event, never as if it were whole.
    with pytest.raises(openai.APIError, match="finishReason"):
        list(client.chat.completions.create(model="gemini-2.0-flash", messages=user("truncate"), stream=True))


@pytest.mark.sdk
def test_sdk_tool_call_whole_streamed_and_answered(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    tools: Any = [{"type": "function", "function": {"name": "now", "description": "The current time."}}]
    answer = client.chat.completions.create(
        model="gemini-2.0-flash", messages=user("Days to New Year's Eve?"), tools=tools
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "now"  # type: ignore[union-attr]
    assert call.function.arguments == "{}"  # type: ignore[union-attr]
    assert fake.requests[-1]["body"]["tools"] == [
        {"functionDeclarations": [{"name": "now", "description": "The current time."}]}
    ]

    # The result goes back as a functionResponse, and the call with the thought signature Gemini gave it.
    follow_up: Any = [
        *user("Days to New Year's Eve?"),
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"now": "2026-11-23"}'},
    ]
    client.chat.completions.create(model="gemini-2.0-flash", messages=follow_up, tools=tools)
    assert fake.requests[-1]["body"]["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "now", "args": {}}, "thoughtSignature": answer_signature()}],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "now", "response": {"now": "2026-11-23"}}}]},
    ]

    chunks = list(
        client.chat.completions.create(model="gemini-2.0-flash", messages=user("Days?"), tools=tools, stream=True)
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas if d.function] == [(0, "now", "{}")]
    assert signature_of(deltas[0].id or "") == stream_signature()


@pytest.mark.sdk
def test_sdk_embeddings_float_and_base64(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    texts = ["What is the meaning of life?", "How much wood would a woodchuck chuck?"]
    documented = [e["values"] for e in fixture("embed_batch.json")["embeddings"][:2]]
    as_float = client.embeddings.create(model="gemini-embedding", input=texts, encoding_format="float", dimensions=5)
    assert [e.embedding for e in as_float.data] == documented
    assert as_float.usage.prompt_tokens == estimate_tokens(texts)  # Google AI gives no count: estimated
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [r["outputDimensionality"] for r in sent["body"]["requests"]] == [5, 5]
    assert_google_ai_auth(sent["headers"])

    as_base64 = client.embeddings.create(model="gemini-embedding", input=texts[0], encoding_format="base64")
    raw = base64.b64decode(as_base64.data[0].embedding)  # type: ignore[arg-type]
    assert struct.unpack(f"<{len(documented[0])}f", raw) == pytest.approx(documented[0], rel=1e-6)

    # the SDK's default asks for base64 and decodes it
    default = client.embeddings.create(model="gemini-embedding", input=texts[0])
    assert default.data[0].embedding == pytest.approx(documented[0], rel=1e-6)


@pytest.mark.sdk
def test_sdk_vertex_ai_uses_a_bearer_token_and_predict(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    answer = client.chat.completions.create(model="vertex-flash", messages=user("Where is Google?"))
    assert answer.choices[0].finish_reason == "stop"
    sent = fake.requests[-1]
    assert (
        sent["path"] == "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    )
    assert sent["headers"]["authorization"] == "Bearer ya29.vertex-token"
    assert "x-goog-api-key" not in sent["headers"]

    embedded = client.embeddings.create(model="vertex-embedding", input=["a", "b"], encoding_format="float")
    assert len(embedded.data) == 2
    assert embedded.usage.prompt_tokens == 17  # Vertex's own token counts
    sent = fake.requests[-1]
    assert sent["path"].endswith("/publishers/google/models/text-embedding-005:predict")
    assert sent["body"] == {"instances": [{"content": "a"}, {"content": "b"}]}


@pytest.mark.sdk
def test_sdk_errors(gemini: tuple[openai.OpenAI, FakeGemini, Gateway]) -> None:
    client, fake, _ = gemini
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gemini-2.0-flash", messages=user("error-429"))
    assert limited.value.response.headers["retry-after"] == "37"  # from Google's RetryInfo
    assert limited.value.body == {
        "message": fixture("error_quota_exceeded.json")["error"]["message"],
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    with pytest.raises(openai.RateLimitError):
        list(client.chat.completions.create(model="gemini-2.0-flash", messages=user("error-429"), stream=True))

    with pytest.raises(openai.BadRequestError) as blocked:
        client.chat.completions.create(model="gemini-2.0-flash", messages=user("blocked"))
    assert blocked.value.code == "content_policy_violation"
    with pytest.raises(openai.APIError, match="blocked by Gemini's safety filters"):
        list(client.chat.completions.create(model="gemini-2.0-flash", messages=user("blocked"), stream=True))

    requests_before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(
            model="gemini-2.0-flash",
            messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
        )
    assert unsupported.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="gemini-2.0-flash", prompt="hi")  # Gemini has no legacy completions
    assert len(fake.requests) == requests_before  # refused before any upstream call
