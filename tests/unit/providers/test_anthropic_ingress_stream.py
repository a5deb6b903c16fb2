"""The stream encoder turns OpenAI chat chunks into Anthropic's event sequence, with block indexes that follow
text and tool calls as they interleave, usage on message_delta, and an error event that ends a failed stream."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamTimeout
from gateway.providers.anthropic.ingress.stream import AnthropicEncoder

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "served"}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {**HEAD, "choices": choices, **extra}


def call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if name:
        function["name"] = name
    return {"index": index, **({"id": call_id, "type": "function"} if call_id else {}), "function": function}


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an SSE body; each data's type must name its event."""
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        name_line, data_line = frame.split(b"\n")
        name = name_line.removeprefix(b"event: ").decode()
        payload = orjson.loads(data_line.removeprefix(b"data: "))
        assert payload["type"] == name
        out.append((name, payload))
    return out


def encode(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    encoder = AnthropicEncoder("msg_1", "asked", "req-1")
    data = b"".join(encoder.chunk(orjson.dumps(c), c) or b"" for c in chunks)
    return events(data + encoder.end())


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}


def test_a_text_stream() -> None:
    out = encode(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(None, usage=USAGE),
        ]
    )
    assert [name for name, _ in out] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = out[0][1]["message"]
    assert start["id"] == "msg_1"
    assert start["model"] == "served"
    assert start["role"] == "assistant"
    assert start["content"] == []
    assert out[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert out[2][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert out[4][1] == {"type": "content_block_stop", "index": 0}
    assert out[5][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 0,
        },
    }


def test_text_and_tool_calls_interleaved_get_their_own_blocks() -> None:
    out = encode(
        [
            chunk({"role": "assistant", "content": "Checking."}),
            chunk({"tool_calls": [call(0, "", "call_a", "get_weather")]}),
            chunk({"tool_calls": [call(0, '{"city": ')]}),
            chunk({"tool_calls": [call(0, '"Paris"}')]}),
            chunk({"tool_calls": [call(1, '{"city": "Rome"}', "call_b", "get_weather")]}),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
        ]
    )
    blocks = [(name, data.get("index")) for name, data in out if name.startswith("content_block")]
    assert blocks == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
    ]
    starts = [data["content_block"] for name, data in out if name == "content_block_start"]
    assert starts[1] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert starts[2]["id"] == "call_b"
    partial = "".join(d["delta"]["partial_json"] for n, d in out if n == "content_block_delta" and d["index"] == 1)
    assert orjson.loads(partial) == {"city": "Paris"}
    assert out[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    out = encode([chunk({"tool_calls": [call(0, "{}", "c", "f")]}), chunk({"content": "done"}), chunk({}, "stop")])
    starts = [(d["index"], d["content_block"]["type"]) for n, d in out if n == "content_block_start"]
    assert starts == [(0, "tool_use"), (1, "text")]


def test_stop_reasons_and_refusal() -> None:
    assert encode([chunk({"content": "x"}, "length")])[-2][1]["delta"]["stop_reason"] == "max_tokens"
    refused = encode([chunk({"refusal": "I can't."}), chunk({}, "stop")])
    assert refused[2][1]["delta"] == {"type": "text_delta", "text": "I can't."}
    assert refused[-2][1]["delta"]["stop_reason"] == "refusal"


def test_an_empty_stream_still_ends_properly() -> None:
    encoder = AnthropicEncoder("msg_1", "asked")
    out = events(encoder.end())
    assert [name for name, _ in out] == ["message_start", "message_delta", "message_stop"]
    assert out[0][1]["message"]["model"] == "asked"
    assert out[1][1]["usage"] == {"output_tokens": 0}
    assert encoder.end() == b""  # once


def test_an_error_event_from_upstream_ends_the_stream() -> None:
    encoder = AnthropicEncoder("msg_1", "asked", "req-1")
    assert encoder.chunk(b"", chunk({"content": "Hi"}))
    error = {"error": {"message": "Overloaded", "type": "overloaded_error"}}
    out = events(encoder.chunk(orjson.dumps(error), error) or b"")
    assert out == [
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req-1"},
        )
    ]
    assert encoder.chunk(b"", chunk({"content": "more"})) is None
    assert encoder.end() == b""


def test_an_upstream_error_type_anthropic_does_not_know_becomes_api_error() -> None:
    encoder = AnthropicEncoder("msg_1", "asked")
    error = {"error": {"message": "boom", "type": "server_error"}}
    assert events(encoder.chunk(b"", error) or b"")[0][1]["error"] == {"type": "api_error", "message": "boom"}


def test_a_failed_relay_sends_an_error_event_in_anthropic_shape() -> None:
    encoder = AnthropicEncoder("msg_1", "asked")
    encoder.chunk(b"", chunk({"content": "Hi"}))
    out = events(encoder.error(UpstreamTimeout("The upstream stream sent nothing for 1 s.")))
    assert out == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "timeout_error", "message": "The upstream stream sent nothing for 1 s."},
            },
        )
    ]
    assert encoder.end() == b""


def test_payloads_that_are_not_json_objects_are_dropped() -> None:
    encoder = AnthropicEncoder("msg_1", "asked")
    assert encoder.chunk(b"keep-alive", None) is None
