"""guardrails without a gateway: the checks the policy's decision attaches, a fake project-flag store, and a fake
resend for json_schema's retry."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.context import RequestContext, Usage
from gateway.errors import GuardrailBlocked, InvalidRequest
from gateway.filters.guardrails import GuardrailsFilter
from gateway.guardrails.build import CheckEnv
from gateway.guardrails.stream import StreamGuard
from gateway.pipeline import Reply
from gateway.policy.decision import Decision, GuardrailSpec
from gateway.telemetry.metrics import Metrics
from tests.unit.filters.helpers import chat, make_ctx

EMAIL = "ann@example.com"


class Flags:
    """Every guardrail on, except those named off."""

    def __init__(self, *off: str) -> None:
        self.off = set(off)

    def any_off(self, prefix: str) -> bool:
        return bool(self.off)

    def enabled(self, flag: str, project: str) -> bool:
        return flag not in self.off


class Resend:
    """The router's second attempt: answers with the next of `answers`."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.sent: list[list[dict[str, Any]]] = []

    async def __call__(self, ctx: RequestContext) -> Reply:
        self.sent.append(ctx.body["messages"])
        ctx.usage = Usage(prompt_tokens=20, completion_tokens=5)
        return Reply(body=answer(self.answers.pop(0)))


def make(*off: str, resend: Resend | None = None, holdback: int = 64) -> tuple[GuardrailsFilter, CollectorRegistry]:
    metrics = Metrics()  # its registry flushes the filter's batched counters when read
    filt = GuardrailsFilter(CheckEnv(), Flags(*off), resend or Resend(), holdback=holdback, metrics=metrics)  # type: ignore[arg-type]
    return filt, metrics.registry


def spec(name: str, action: str, stages: str = "input", **settings: Any) -> GuardrailSpec:
    stage_set = frozenset({"input", "output"}) if stages == "both" else frozenset({stages})
    return GuardrailSpec(name=name, action=action, stages=stage_set, settings=settings, policy="p")


def guarded(body: dict[str, Any], *specs: GuardrailSpec) -> RequestContext:
    ctx = make_ctx(body)
    ctx.policy = Decision(matched=("p",), guardrails={s.name: s for s in specs})
    return ctx


def answer(text: str) -> bytes:
    return orjson.dumps({"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def checks(registry: CollectorRegistry, check: str, stage: str, outcome: str) -> Any:
    labels = {"check": check, "stage": stage, "outcome": outcome}
    return registry.get_sample_value("gateway_guardrail_checks_total", labels)


@pytest.mark.anyio
async def test_no_policy_no_checks():
    filt, _ = make()
    ctx = make_ctx(chat(f"mail {EMAIL}"))
    assert await filt.on_request(ctx) is None
    assert await filt.on_response(ctx, Reply(body=answer(EMAIL))) is None
    assert ctx.guardrails is None


@pytest.mark.anyio
async def test_personal_data_in_the_prompt_is_redacted_in_place_and_recorded_without_the_text():
    filt, registry = make()
    ctx = guarded(chat(f"write to {EMAIL} today"), spec("pii", "redact"))
    assert await filt.on_request(ctx) is None
    assert ctx.body["messages"][0]["content"] == "write to [EMAIL] today"
    assert ctx.body_changed
    assert ctx.guardrails is not None
    (entry,) = ctx.guardrails
    assert (entry["check"], entry["stage"], entry["action"], entry["policy"]) == ("pii", "input", "redact", "p")
    assert EMAIL not in orjson.dumps(entry).decode()
    assert checks(registry, "pii", "input", "redact") == 1


@pytest.mark.anyio
async def test_a_blocking_check_refuses_the_prompt():
    filt, registry = make()
    ctx = guarded(chat("how do I build a bomb"), spec("keywords", "block", deny=["build a bomb"]))
    with pytest.raises(GuardrailBlocked) as info:
        await filt.on_request(ctx)
    assert info.value.code == "guardrail_blocked"
    assert "keywords guardrail" in info.value.message
    assert checks(registry, "keywords", "input", "block") == 1
    clean = guarded(chat("how do I bake bread"), spec("keywords", "block", deny=["build a bomb"]))
    assert await filt.on_request(clean) is None
    assert checks(registry, "keywords", "input", "pass") == 1


@pytest.mark.anyio
async def test_a_project_flag_turns_a_check_off():
    filt, _ = make("guardrail.keywords")
    ctx = guarded(chat("how do I build a bomb"), spec("keywords", "block", deny=["build a bomb"]))
    assert await filt.on_request(ctx) is None


@pytest.mark.anyio
async def test_redact_on_a_check_that_cannot_redact_blocks():
    filt, _ = make()
    ctx = guarded(chat("x" * 50), spec("length", "redact", max_chars=10))
    with pytest.raises(GuardrailBlocked):
        await filt.on_request(ctx)


@pytest.mark.anyio
async def test_token_id_prompts_cannot_be_read_by_input_checks():
    filt, _ = make()
    ctx = guarded({"model": "demo", "prompt": [1, 2, 3]}, spec("pii", "log"))
    ctx.endpoint = "completions"
    with pytest.raises(InvalidRequest) as info:
        await filt.on_request(ctx)
    assert info.value.code == "guardrail_unreadable_input"


@pytest.mark.anyio
async def test_a_whole_answer_is_redacted_before_it_leaves():
    filt, _ = make()
    ctx = guarded(chat("who?"), spec("pii", "redact", "output"))
    await filt.on_request(ctx)
    replaced = await filt.on_response(ctx, Reply(body=answer(f"write to {EMAIL}")))
    assert replaced is not None
    assert orjson.loads(replaced.body)["choices"][0]["message"]["content"] == "write to [EMAIL]"
    clean = await filt.on_response(ctx, Reply(body=answer("nobody")))
    assert clean is None  # unchanged: the original bytes go out
    assert await filt.on_response(ctx, Reply(status=502, body=answer(EMAIL))) is None  # errors are not checked


@pytest.mark.anyio
async def test_json_schema_retry_asks_once_more_through_the_resend_and_adds_its_usage():
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    resend = Resend('{"n": 3}')
    filt, _ = make(resend=resend)
    ctx = guarded(chat("a number as JSON"), spec("json_schema", "retry", "output", schema=schema))
    await filt.on_request(ctx)
    ctx.usage = Usage(prompt_tokens=10, completion_tokens=3)
    replaced = await filt.on_response(ctx, Reply(body=answer("three")))
    assert replaced is not None
    assert orjson.loads(replaced.body)["choices"][0]["message"]["content"] == '{"n": 3}'
    assert ctx.tags["json_schema_retry"] == "repaired"
    (messages,) = resend.sent
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "three"
    assert ctx.usage is not None
    assert (ctx.usage.prompt_tokens, ctx.usage.completion_tokens) == (30, 8)


@pytest.mark.anyio
async def test_json_schema_blocks_when_the_retry_fails_too():
    schema = {"type": "object", "required": ["n"]}
    filt, _ = make(resend=Resend("still not JSON"))
    ctx = guarded(chat("a number as JSON"), spec("json_schema", "retry", "output", schema=schema))
    await filt.on_request(ctx)
    with pytest.raises(GuardrailBlocked) as info:
        await filt.on_response(ctx, Reply(body=answer("three")))
    assert "failed the response schema twice" in info.value.message


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def streamed(chunks: list[dict[str, Any] | None]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c is not None)


@pytest.mark.anyio
async def test_a_streamed_answer_is_redacted_across_chunks_through_the_hold_back_window():
    filt, registry = make(holdback=32)
    ctx = guarded(chat("who?", stream=True), spec("pii", "redact", "output"))
    await filt.on_request(ctx)
    assert ctx.state(StreamGuard) is not None
    out = [filt.on_chunk(ctx, delta("mail ann@exa")), filt.on_chunk(ctx, delta("mple.com now"))]
    out.append(filt.on_chunk(ctx, delta("", finish="stop")))
    assert streamed(out) == "mail [EMAIL] now"
    assert filt.on_stream_end(ctx) == []
    await filt.on_response(ctx, Reply(stream=object()))  # type: ignore[arg-type]
    assert checks(registry, "pii", "output", "redact") == 1  # recorded once the stream has ended


@pytest.mark.anyio
async def test_text_still_held_when_the_stream_ends_goes_out_in_one_last_chunk():
    filt, _ = make(holdback=32)
    ctx = guarded(chat("who?", stream=True), spec("pii", "redact", "output"))
    await filt.on_request(ctx)
    first = filt.on_chunk(ctx, delta("short"))
    (last,) = filt.on_stream_end(ctx)
    assert streamed([first, last]) == "short"


@pytest.mark.anyio
async def test_a_stream_with_only_log_checks_goes_out_as_it_came_and_is_checked_whole_at_the_end():
    filt, registry = make(holdback=32)
    ctx = guarded(chat("who?", stream=True), spec("pii", "log", "output"))
    await filt.on_request(ctx)
    chunks = [delta("mail ann@exa"), delta("mple.com now"), delta("", finish="stop")]
    out = [filt.on_chunk(ctx, chunk) for chunk in chunks]
    assert all(sent is chunk for sent, chunk in zip(out, chunks, strict=True))  # as it came: the relay sends its bytes
    assert filt.on_stream_end(ctx) == []
    await filt.on_response(ctx, Reply(stream=object()))  # type: ignore[arg-type]
    assert checks(registry, "pii", "output", "log") == 1  # the whole answer, the address across two chunks


@pytest.mark.anyio
async def test_a_blocking_check_ends_a_stream_with_the_guardrail_s_error():
    filt, registry = make(holdback=8)
    ctx = guarded(chat("how?", stream=True), spec("keywords", "block", "output", deny=["build a bomb"]))
    await filt.on_request(ctx)
    assert streamed([filt.on_chunk(ctx, delta("first you"))]) == "f"  # the rest held back: 8 characters
    with pytest.raises(GuardrailBlocked) as info:
        filt.on_chunk(ctx, delta(" build a bomb and then"))
    assert info.value.code == "guardrail_blocked"
    assert checks(registry, "keywords", "output", "block") == 1
    assert ctx.guardrails is not None
    assert ctx.guardrails[0]["action"] == "block"
