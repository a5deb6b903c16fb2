"""A cached answer replayed as chunks, and chunks assembled into the answer: the two are inverses."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.cache.replay import StreamAssembler, replay_chunks
from gateway.context import Usage

CHAT: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 5,
    "model": "demo-1",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "logprobs": None,
         "finish_reason": "stop"},
        {"index": 1, "logprobs": None, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}},
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
}  # fmt: skip


def assemble(endpoint: str, payloads: list[bytes]) -> StreamAssembler:
    assembler = StreamAssembler(endpoint)
    for payload in payloads:
        assembler.add(orjson.loads(payload))
    return assembler


def test_a_chat_answer_replays_as_chunks_with_usage_last_and_assembles_back():
    payloads = replay_chunks("chat/completions", CHAT)
    chunks = [orjson.loads(p) for p in payloads]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    assert chunks[-1] == {**{k: CHAT[k] for k in ("id", "created", "model")}, "object": "chat.completion.chunk",
                          "choices": [], "usage": CHAT["usage"]}  # fmt: skip
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there!"
    assembler = assemble("chat/completions", payloads)
    assert assembler.complete
    assert assembler.answer(Usage(11, 3)) == CHAT


def test_a_legacy_completion_replays_and_assembles_back():
    answer = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "text": "done", "logprobs": None, "finish_reason": "stop"}]}  # fmt: skip
    payloads = replay_chunks("completions", answer)
    assert assemble("completions", payloads).answer(None) == answer


def test_a_stream_cut_before_every_choice_finished_is_not_complete():
    payloads = replay_chunks("chat/completions", CHAT)
    assert not assemble("chat/completions", payloads[:4]).complete  # the second choice began, never finished
    assert not StreamAssembler("chat/completions").complete


def test_tool_call_arguments_arriving_in_pieces_are_joined():
    head = {"id": "c", "created": 1, "model": "m"}
    pieces = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    assembler = StreamAssembler("chat/completions")
    for piece in pieces:
        assembler.add({**head, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]})
    assembler.add({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    call = assembler.answer(None)["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
