"""The Responses API served natively: whatever an upstream sends, its translation for the pipeline never raises,
and a well-formed answer and stream read as the chat completion and chunks they say."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, strategies as st

from gateway.providers.openai.responses.native import ChatFromResponses, native_body, to_chat, usage_of

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EVENT_TYPES = st.sampled_from([
    "response.created", "response.output_text.delta", "response.refusal.delta", "response.output_item.added",
    "response.function_call_arguments.delta", "response.completed", "response.incomplete", "response.failed", "error",
])  # fmt: skip


@given(st.dictionaries(st.sampled_from(["output", "usage", "status", "incomplete_details", "model", "id"]), JSON))
def test_any_answer_reads_as_a_chat_completion(answer: dict[str, Any]) -> None:
    chat = to_chat(answer)
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["finish_reason"] in ("stop", "tool_calls", "length", "content_filter")
    orjson.dumps(chat)


@given(st.lists(st.one_of(JSON, st.fixed_dictionaries({"type": EVENT_TYPES}, optional={"delta": JSON, "item": JSON,
                "item_id": JSON, "response": JSON})), max_size=8))  # fmt: skip
def test_any_events_translate_without_raising(events: list[Any]) -> None:
    translator = ChatFromResponses("m")
    for event in events:
        for payload in translator.feed(orjson.dumps(event)):
            assert isinstance(orjson.loads(payload), dict)
        if translator.stopped:
            break


def test_a_stream_reads_as_chat_chunks() -> None:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": ""}
    usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    events = [
        {"type": "response.created", "response": {"model": "served"}},
        {"type": "response.output_text.delta", "delta": "Hi"},
        {"type": "response.output_item.added", "item": call},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"a":1}'},
        {"type": "response.completed", "response": {"status": "completed", "usage": usage}},
    ]
    translator = ChatFromResponses("m")
    chunks = [orjson.loads(p) for p in translator.feed_all([orjson.dumps(e) for e in events])]
    assert chunks[0]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[4]["usage"]["prompt_tokens"] == 5
    assert translator.model == "served"
    assert translator.stopped
    assert not translator.failed
    assert translator.usage == usage_of(usage)


def test_the_upstream_body_inlines_the_conversation_without_ids_and_stores_nothing() -> None:
    body = {"model": "x", "input": "hi", "previous_response_id": "resp_1", "store": True, "include": ["a"]}
    items = [{"id": "in_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    sent = native_body(body, items)
    assert sent == {"model": "x", "input": [{k: v for k, v in items[0].items() if k != "id"}], "store": False,
                    "include": ["a"]}  # fmt: skip
