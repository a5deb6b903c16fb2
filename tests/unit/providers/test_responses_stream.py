"""The stream encoder turns OpenAI chat chunks into Responses events that the openai SDK's own models and its
`responses.stream` helper read: items opened and closed in order, sequence numbers from 0, the whole Response on
response.completed (or response.incomplete), and response.failed, with nothing after it, when the stream fails."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import given, settings, strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import GuardrailBlocked, UpstreamTimeout
from gateway.providers.openai.responses.answer import to_response
from gateway.providers.openai.responses.stream import ResponsesEncoder

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "served"}
REQUEST: dict[str, Any] = {"model": "asked", "input": "hi", "stream": True}
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}
EVENT = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {**HEAD, "choices": choices, **extra}


def call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if name:
        function["name"] = name
    return {"index": index, **({"id": call_id, "type": "function"} if call_id else {}), "function": function}


def events(data: bytes) -> list[dict[str, Any]]:
    """The events of an SSE body, each checked: its event name is its type, the SDK's model takes it, and the
    sequence numbers count from 0."""
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        name_line, data_line = frame.split(b"\n")
        payload = orjson.loads(data_line.removeprefix(b"data: "))
        assert payload["type"] == name_line.removeprefix(b"event: ").decode()
        EVENT.validate_python(payload)
        out.append(payload)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


class Run:
    """An encoder fed chunks, with what it handed to on_complete."""

    def __init__(self) -> None:
        self.completed: list[dict[str, Any]] = []
        self.encoder = ResponsesEncoder(
            REQUEST, request_id="r1", model="asked", created_at=1700000000.0, on_complete=self.completed.append
        )

    def feed(self, chunks: list[dict[str, Any]]) -> bytes:
        return b"".join(self.encoder.chunk(orjson.dumps(c), c) or b"" for c in chunks)

    def all(self, chunks: list[dict[str, Any]]) -> bytes:
        return self.feed(chunks) + self.encoder.end()


def types(out: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in out]


def test_a_text_stream() -> None:
    run = Run()
    out = events(
        run.all(
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Hel"}),
                chunk({"content": "lo"}),
                chunk({}, "stop"),
                chunk(usage=USAGE),
            ]
        )
    )
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert out[0]["response"]["id"] == "resp_r1"
    assert out[0]["response"]["status"] == "in_progress"
    assert out[0]["response"]["model"] == "served"
    assert out[2]["item"] == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert out[4] == {
        "type": "response.output_text.delta",
        "item_id": "msg_r1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hel",
        "logprobs": [],
        "sequence_number": 4,
    }
    assert out[6]["text"] == "Hello"
    final = out[-1]["response"]
    assert final["status"] == "completed"
    assert final["usage"]["input_tokens"] == 12
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert Response.model_validate(final).output_text == "Hello"
    assert run.completed == [final]  # once, with the whole Response


def test_text_then_parallel_tool_calls_interleaved() -> None:
    run = Run()
    out = events(
        run.all(
            [
                chunk({"content": "Looking."}),
                chunk({"tool_calls": [call(0, "", "call_a", "get")]}),
                chunk({"tool_calls": [call(0, '{"ci')]}),
                chunk({"tool_calls": [call(1, "{}", "call_b", "put")]}),
                chunk({"tool_calls": [call(0, 'ty":"Oslo"}')]}),  # an upstream that interleaves
                chunk({}, "tool_calls"),
            ]
        )
    )
    added = [e for e in out if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["id"]) for e in added] == [(0, "msg_r1"), (1, "fc_r1_0"), (2, "fc_r1_1")]
    assert added[1]["item"]["call_id"] == "call_a"
    arguments = [e for e in out if e["type"] == "response.function_call_arguments.done"]
    assert [(e["item_id"], e["arguments"]) for e in arguments] == [("fc_r1_0", '{"city":"Oslo"}'), ("fc_r1_1", "{}")]
    final = out[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][1]["name"] == "get"


def test_the_final_response_matches_the_whole_answers() -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get", "arguments": "{}"}}]
    whole = {
        "model": "served",
        "choices": [{"message": {"content": "Hi", "tool_calls": calls}, "finish_reason": "tool_calls"}],
        "usage": USAGE,
    }
    run = Run()
    run.all(
        [
            chunk({"content": "Hi"}),
            chunk({"tool_calls": [call(0, "{}", "call_a", "get")]}),
            chunk({}, "tool_calls"),
            chunk(usage=USAGE),
        ]
    )
    expected = to_response(whole, REQUEST, request_id="r1", model="asked", created_at=1700000000.0, usage=None)
    assert run.completed == [expected]


def test_a_refusal_streams_as_a_refusal_part() -> None:
    out = events(Run().all([chunk({"refusal": "No"}), chunk({"refusal": "."}), chunk({}, "stop")]))
    assert "refusal.delta" in types(out)
    done = next(e for e in out if e["type"] == "response.refusal.done")
    assert done["refusal"] == "No."
    assert out[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_stream_cut_short_ends_incomplete(finish: str, reason: str) -> None:
    run = Run()
    out = events(run.all([chunk({"content": "Hel"}), chunk({}, finish)]))
    assert out[-1]["type"] == "response.incomplete"
    final = out[-1]["response"]
    assert (final["status"], final["incomplete_details"]) == ("incomplete", {"reason": reason})
    assert final["output"][0]["status"] == "incomplete"
    assert run.completed == [final]


def test_an_empty_stream_still_completes_with_an_empty_message() -> None:
    run = Run()
    out = events(run.encoder.end())
    assert types(out) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert out[-1]["response"]["model"] == "asked"
    assert run.encoder.end() == b""
    assert len(run.completed) == 1


def test_an_upstream_error_chunk_fails_the_response_and_ends_the_stream() -> None:
    run = Run()
    data = run.feed([chunk({"content": "Hel"}), {"error": {"message": "overloaded", "type": "server_error"}}])
    out = events(data + run.encoder.end())
    assert out[-1]["type"] == "response.failed"
    failed = out[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "overloaded"}
    assert failed["output"][0]["content"][0]["text"] == "Hel"
    assert failed["output"][0]["status"] == "incomplete"
    assert run.encoder.chunk(b"{}", {}) is None
    assert run.encoder.error(UpstreamTimeout("late")) == b""
    assert run.completed == []  # a failed response is not a completed one


def test_an_upstream_rate_limit_keeps_its_code() -> None:
    run = Run()
    out = events(run.feed([{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}]))
    assert types(out) == ["created", "in_progress", "failed"]
    assert out[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_a_failed_relay_sends_response_failed_even_before_any_chunk() -> None:
    run = Run()
    out = events(run.encoder.error(UpstreamTimeout("The upstream stream sent nothing for 30 s.")) + run.encoder.end())
    assert types(out) == ["created", "in_progress", "failed"]
    assert out[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "The upstream stream sent nothing for 30 s.",
    }
    blocked = Run()
    data = blocked.feed([chunk({"content": "x"})])
    failed = events(data + blocked.encoder.error(GuardrailBlocked("blocked by pii", check="pii", stage="output")))
    assert failed[-1]["response"]["error"]["code"] == "invalid_prompt"


def test_payloads_that_are_not_json_objects_are_dropped() -> None:
    run = Run()
    assert run.encoder.chunk(b"not json", None) is None
    assert not run.encoder.started


# -- the openai SDK reads it ----------------------------------------------------------------------------------


def sdk_client(body: bytes) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="k", base_url="http://gateway/v1", http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )


@pytest.mark.sdk
def test_the_sdk_stream_helper_accumulates_the_events() -> None:
    body = Run().all(
        [
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({"tool_calls": [call(0, '{"a":', "call_a", "get")]}),
            chunk({"tool_calls": [call(0, "1}")]}),
            chunk({}, "tool_calls"),
            chunk(usage=USAGE),
        ]
    )
    client = sdk_client(body)
    with client.responses.stream(model="asked", input="hi") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created"
    assert seen[-1] == "response.completed"
    assert final.id == "resp_r1"
    assert final.output_text == "Hello"
    assert final.output[1].type == "function_call"
    assert final.output[1].arguments == '{"a":1}'
    assert final.usage is not None
    assert final.usage.total_tokens == 15


@pytest.mark.sdk
def test_the_sdk_sees_a_failed_stream_as_response_failed() -> None:
    run = Run()
    body = run.feed([chunk({"content": "Hel"})]) + run.encoder.error(UpstreamTimeout("idle")) + run.encoder.end()
    client = sdk_client(body)
    raw = list(client.responses.create(model="asked", input="hi", stream=True))
    assert raw[-1].type == "response.failed"
    assert raw[-1].response.error is not None
    assert raw[-1].response.error.message == "idle"
    with client.responses.stream(model="asked", input="hi") as stream:
        assert [event.type for event in stream][-1] == "response.failed"
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()


# -- any chunks ------------------------------------------------------------------------------------------------

ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
CALL = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 2) | ANY,
        "id": st.sampled_from(["call_a", "call_b", ""]) | ANY,
        "function": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=3) | ANY, "arguments": st.text(max_size=3) | ANY}
        )
        | ANY,
    },
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text(max_size=4) | ANY,
        "refusal": st.text(max_size=4) | ANY,
        "tool_calls": st.lists(CALL, max_size=2) | ANY,
    },
)
CHUNK = (
    st.builds(chunk, DELTA, st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"]))
    | st.just(chunk(usage=USAGE))
    | st.fixed_dictionaries({"error": ANY})
    | st.dictionaries(st.sampled_from(["choices", "model", "id"]), ANY, max_size=2)
)


@settings(max_examples=300, database=None, deadline=None)
@given(chunks=st.lists(CHUNK, max_size=8), fail=st.booleans())
def test_any_chunks_make_a_well_formed_event_sequence(chunks: list[dict[str, Any]], fail: bool) -> None:
    run = Run()
    data = run.feed(chunks)
    if fail:
        data += run.encoder.error(UpstreamTimeout("idle"))
    out = events(data + run.encoder.end())
    assert types(out)[:2] == ["created", "in_progress"]
    last = out[-1]
    assert last["type"] in ("response.completed", "response.incomplete", "response.failed")
    Response.model_validate(last["response"])
    assert run.completed == ([] if last["type"] == "response.failed" else [last["response"]])
    added = {e["output_index"] for e in out if e["type"] == "response.output_item.added"}
    closed = {e["output_index"] for e in out if e["type"] == "response.output_item.done"}
    assert closed == (added if last["type"] != "response.failed" else closed & added)
