"""guardrails: the checks that the matching policies attach (ctx.policy.guardrails), on the prompt before the
call and on the answer after it — whole, or streamed through a hold-back window.

Actions: `block` refuses (400 guardrail_blocked; mid-stream, an error event and [DONE]); `redact` rewrites the
text with typed placeholders (pii; keywords get [REDACTED]); `log` only records. `redact` on a check that cannot
redact (length, injection, abuse) blocks: the operator asked for the text not to pass as it is. json_schema's
`retry` asks the model once more, telling it what failed; a second failure blocks.

Every check run leaves its score and findings (types and positions, never text) in the request's record, and
counts in gateway_guardrail_checks by check, stage and outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import orjson
from prometheus_client import Counter

from gateway.context import RequestContext, Usage
from gateway.errors import GuardrailBlocked, InvalidRequest
from gateway.filters.base import Stage
from gateway.guardrails.base import REDACTED, CheckResult, Finding, replace_spans
from gateway.guardrails.build import Check, build_check
from gateway.guardrails.stream import Blocked, StreamGuard
from gateway.guardrails.text import UNTRUSTED_ROLES, Slot, answer_slots, has_token_arrays, joined, prompt_slots
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components
    from gateway.decision import GuardrailSpec
    from gateway.flags import Features
    from gateway.guardrails.build import CheckEnv
    from gateway.guardrails.json_schema import JsonSchemaCheck
    from gateway.routing.router import Router
    from gateway.telemetry.metrics import Metrics

logger = logging.getLogger("gateway.guardrails")


class Resend(Protocol):
    """Sends the request upstream once more, as the router does (json_schema's `retry`), and settles that
    attempt's routing; the reply of the new attempt."""

    async def __call__(self, ctx: RequestContext) -> Reply: ...


def resend_through(router: Router) -> Resend:
    async def resend(ctx: RequestContext) -> Reply:
        reply = await router.send(ctx)
        router.finished(ctx)
        return reply

    return resend


class GuardrailsFilter(Stage):
    name = "guardrails"
    requires = ("policy",)
    order_note = "policies choose which checks run"
    sees_chunks = True

    def __init__(
        self,
        env: CheckEnv,
        features: Features,
        resend: Resend,
        *,
        holdback: int,
        metrics: Metrics,
        schema_max_bytes: int = 32 << 10,
    ) -> None:
        self.resend = resend
        self.schema_max_bytes = schema_max_bytes  # guardrails.json_schema_max_kb
        self.env = env
        self.holdback = holdback
        self.features = features
        self._built: dict[tuple[str, str, int], tuple[Mapping[str, Any], Check]] = {}
        # What a decision's checks ask of each request, worked out once per decision (a PolicySet caches its
        # decisions, so their guardrails mappings are the same objects request after request).
        self._plans: dict[int, _Plan] = {}
        # The counters' children as Metrics.counter accumulators: a plain addition per request, written to
        # prometheus_client when the metrics are read or flushed (an inc() is four Python calls and a lock).
        self.metrics = metrics
        self._check_children: dict[tuple[str, str, str], Any] = {}
        self._finding_children: dict[tuple[str, str], Any] = {}
        registry = metrics.registry
        self._checks = Counter(
            "gateway_guardrail_checks", "Guardrail checks run, by check, stage and outcome (pass or the action).",
            ["check", "stage", "outcome"], registry=registry,
        )  # fmt: skip
        self._findings = Counter(
            "gateway_guardrail_findings", "What guardrail checks found, by check and finding type.",
            ["check", "type"], registry=registry,
        )  # fmt: skip

    @classmethod
    def build(cls, components: Components) -> GuardrailsFilter:
        return cls(
            components.check_env,
            components.features,
            resend_through(components.router),
            holdback=components.config.guardrails.stream_holdback_chars,
            metrics=components.metrics,
            schema_max_bytes=int(components.config.guardrails.json_schema_max_kb * 1024),
        )

    def _active(self, ctx: RequestContext, specs: Mapping[str, GuardrailSpec]) -> Mapping[str, GuardrailSpec]:
        """The checks the policies attached, less those the project's guardrail.<check> flags turn off."""
        features = self.features
        if not features.any_off("guardrail."):
            return specs
        project = ctx.principal.project
        return {name: spec for name, spec in specs.items() if features.enabled(f"guardrail.{name}", project)}

    def _plan(self, ctx: RequestContext, specs: Mapping[str, GuardrailSpec]) -> _Plan:
        """The plan of the active checks: kept per decision while no project flag turns a check off."""
        active = self._active(ctx, specs)
        if active is not specs:
            return _Plan(active)
        plan = self._plans.get(id(specs))
        if plan is None or plan.specs is not specs:  # an id reused by a newer decision's mapping
            if len(self._plans) >= 1024:
                self._plans.clear()
            plan = self._plans[id(specs)] = _Plan(specs)
        return plan

    # -- input ----------------------------------------------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        decision = ctx.policy
        if decision is None or not decision.guardrails:
            return None
        plan = self._plan(ctx, decision.guardrails)
        if plan.schema_spec is not None:
            # A schema that cannot be used fails now, before the upstream call.
            await _schema_check(ctx, plan.schema_spec, self.schema_max_bytes)
        if plan.inputs and has_token_arrays(ctx.body):
            raise InvalidRequest(
                "This request's prompt is token ids, which the guardrails that apply to it cannot read: send text.",
                code="guardrail_unreadable_input",
            )
        if plan.inputs:
            prompt = _Prompt(ctx)
            checks = plan.input_checks
            for i, spec in enumerate(plan.inputs):
                check = checks[i]
                if check is None:  # built on first use, as each request did before
                    check = checks[i] = self.check_for(spec)
                self._input(ctx, spec, check, prompt)
        if plan.stream_guard and ctx.stream:
            ctx.keep(StreamGuard(plan.specs, self.check_for, self.holdback))
        return None

    def _input(self, ctx: RequestContext, spec: GuardrailSpec, check: Check, prompt: _Prompt) -> None:
        if spec.name == "length":  # the whole prompt counts, the application's own parts included
            self.outcome(ctx, spec, check.check(prompt.everything()), "input")
            return
        if spec.name in ("pii", "keywords"):  # data checks read every role: a client writes them all
            slots = prompt.slots(every_role=True)
            if spec.action == "redact":
                if slots and self._redact_slots(ctx, spec, check, slots, "input"):
                    prompt.changed()
                return
            if slots:
                self.outcome(ctx, spec, check.check(prompt.everything()), "input")
            return
        if prompt.slots():
            self.outcome(ctx, spec, check.check(prompt.text()), "input")

    def _redact_slots(
        self, ctx: RequestContext, spec: GuardrailSpec, check: Check, slots: list[Slot], stage: str
    ) -> bool:
        """Redact each text in place (True if any changed); the record's positions are those in the joined text."""
        total = CheckResult(spec.name)
        offset = 0
        for slot in slots:
            text = slot.text
            result = check.check(text)
            if result.findings:
                slot.replace(redact(check, text, result.findings))
                total.findings += [Finding(f.type, f.start + offset, f.end + offset, f.score) for f in result.findings]
                total.triggered = total.triggered or result.triggered
                total.score = max(total.score, result.score)
            offset += len(text) + 1
        if total.findings and stage == "input":
            ctx.body_changed = True
        self.outcome(ctx, spec, total, stage)
        return bool(total.findings)

    def on_stream_end(self, ctx: RequestContext) -> list[dict[str, Any]]:
        guard = ctx.state(StreamGuard)
        if guard is None:
            return []
        try:
            return guard.end_chunks()
        except Blocked as blocked:
            self._blocked(ctx, blocked)

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        guard = ctx.state(StreamGuard)
        if guard is None:
            return chunk
        try:
            return guard.on_chunk(chunk)
        except Blocked as blocked:
            self._blocked(ctx, blocked)

    def _blocked(self, ctx: RequestContext, blocked: Blocked) -> NoReturn:
        """A `block` check fired mid-stream: recorded, and the stream ends with the error (outcome raises it)."""
        spec = blocked.spec
        self.outcome(ctx, spec, blocked.result, "output")
        raise GuardrailBlocked("The answer was blocked.", check=spec.name, stage="output")  # outcome raised already

    # -- output, whole answers ------------------------------------------------------------------------------------

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        decision = ctx.policy
        if decision is None or not decision.guardrails or reply.stream is not None:
            guard = ctx.state(StreamGuard)
            if guard is not None:
                for spec, result in guard.finish():
                    self.outcome(ctx, spec, result, "output")
            return None
        if reply.status != 200 or ctx.endpoint == "embeddings":
            return None
        specs = self._plan(ctx, decision.guardrails).outputs
        if not specs:
            return None
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        changed = False
        if any(s.name in ("pii", "keywords") and s.action in ("redact", "block") for s in specs):
            changed = _drop_logprobs(answer)  # token by token, logprobs would spell out what is redacted
        for spec in specs:
            if spec.name == "json_schema":
                replaced = await self._json_schema(ctx, spec, answer)
                if replaced is not None:
                    answer, changed = replaced, True
                continue
            slots = answer_slots(answer)
            if not slots:
                continue
            check = self.check_for(spec)
            if spec.action == "redact" and spec.name in ("pii", "keywords"):
                changed |= self._redact_slots(ctx, spec, check, slots, "output")
            else:
                self.outcome(ctx, spec, check.check(joined(slots)), "output")
        if not changed:
            return None
        return Reply(status=reply.status, body=orjson.dumps(answer), headers=reply.headers)

    async def _json_schema(
        self, ctx: RequestContext, spec: GuardrailSpec, answer: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Validate; on `retry`, ask once more. Returns the new answer when a retry produced one."""
        check = await _schema_check(ctx, spec, self.schema_max_bytes)
        slots = answer_slots(answer)
        if check is None or not slots:
            return None
        try:
            result = check.check(slots[0].text)
        except ValueError as exc:
            raise InvalidRequest(f"response_format's schema cannot be used: {exc}", param="response_format") from None
        if not result.triggered:
            self.outcome(ctx, spec, result, "output")
            return None
        if spec.action != "retry":
            self.outcome(ctx, spec, result, "output")
            return None
        self._count(spec, "output", "retry", result)
        _record(ctx, spec, result, "output", "retry")
        retried = await self._retry(ctx, slots[0].text, check.retry_hint(slots[0].text))
        if retried is None:
            raise GuardrailBlocked(
                "The answer failed the response schema and the retry did not produce one.",
                check="json_schema", stage="output",
            )  # fmt: skip
        second = answer_slots(retried)
        again = check.check(second[0].text) if second else result
        if again.triggered:
            self._count(spec, "output", "block", again)
            _record(ctx, spec, again, "output", "block")
            raise GuardrailBlocked(
                f"The answer failed the response schema twice: {again.message}", check="json_schema", stage="output"
            )
        self.outcome(ctx, spec, again, "output")
        ctx.tags["json_schema_retry"] = "repaired"
        return retried

    async def _retry(self, ctx: RequestContext, bad: str, why: str) -> dict[str, Any] | None:
        messages = ctx.body.get("messages")
        if not isinstance(messages, list):
            return None
        first_usage, ctx.usage = ctx.usage, None  # the retry's own usage, added to the first's below
        ctx.set_field("messages", [
            *messages,
            {"role": "assistant", "content": bad},
            {"role": "user", "content": f"Your previous answer failed validation: {why}. Answer again with JSON "
                                        "that matches the schema exactly, and nothing else."},
        ])  # fmt: skip
        reply = await self.resend(ctx)
        ctx.usage = _add(first_usage, ctx.usage)
        if reply.status != 200 or reply.stream is not None:
            return None
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return None
        return answer if isinstance(answer, dict) else None

    # -- shared ---------------------------------------------------------------------------------------------------

    def check_for(self, spec: GuardrailSpec) -> Check:
        """The check a spec names, built once per policy set: a spec's settings are its policy's own object."""
        key = (spec.name, spec.policy, id(spec.settings))
        entry = self._built.get(key)
        if entry is None or entry[0] is not spec.settings:  # an id reused by a newer set's settings
            entry = (spec.settings, build_check(spec.name, spec.settings, self.env))
            if len(self._built) >= 1024:
                self._built.clear()
            self._built[key] = entry
        return entry[1]

    def outcome(self, ctx: RequestContext, spec: GuardrailSpec, result: CheckResult, stage: str) -> None:
        """Record a result and act on it: block raises; redact without a way to redact blocks too."""
        action = spec.action if result.triggered else "pass"
        if action == "redact" and spec.name not in ("pii", "keywords"):
            action = "block"
        self._count(spec, stage, action, result)
        if action != "pass" or result.score or result.findings:  # a clean pass is implied by the policy's record
            _record(ctx, spec, result, stage, action)
        if action == "block":
            raise GuardrailBlocked(_message(spec, result, stage), check=spec.name, stage=stage)

    def _count(self, spec: GuardrailSpec, stage: str, outcome: str, result: CheckResult) -> None:
        # labels() costs a lock and a dict lookup per call: keep the children
        key = (spec.name, stage, outcome)
        child = self._check_children.get(key)
        if child is None:
            child = self._check_children[key] = self.metrics.counter(self._checks.labels(*key))
        child.value += 1
        for finding in result.findings:
            found = (spec.name, finding.type)
            child = self._finding_children.get(found)
            if child is None:
                child = self._finding_children[found] = self.metrics.counter(self._findings.labels(*found))
            child.value += 1


def _drop_logprobs(answer: dict[str, Any]) -> bool:
    dropped = False
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and choice.get("logprobs") is not None:
            choice["logprobs"] = None
            dropped = True
    return dropped


async def _schema_check(ctx: RequestContext, spec: GuardrailSpec, max_bytes: int) -> JsonSchemaCheck | None:
    """The json_schema check of this request: the policy's schema, else the request's response_format's (at most
    max_bytes of JSON, its validator built off the event loop)."""
    from gateway.guardrails.json_schema import JsonSchemaCheck, schema_from_response_format, validator_off_loop

    schema = spec.settings.get("schema") or schema_from_response_format(ctx.body.get("response_format"))
    if not schema:
        return None
    try:
        return JsonSchemaCheck(schema, await validator_off_loop(schema, max_bytes))
    except ValueError as exc:
        raise InvalidRequest(f"response_format's schema cannot be used: {exc}", param="response_format") from None


class _Plan:
    """What a set of active checks asks of each request, worked out once: the input checks in order, the output
    ones, whether a json_schema needs its schema checked before the call, whether a stream needs a guard."""

    __slots__ = ("input_checks", "inputs", "outputs", "schema_spec", "specs", "stream_guard")

    def __init__(self, specs: Mapping[str, GuardrailSpec]) -> None:
        self.specs = specs
        schema_spec = specs.get("json_schema")
        self.schema_spec = schema_spec if schema_spec is not None and "output" in schema_spec.stages else None
        self.inputs = [s for s in specs.values() if "input" in s.stages and s.name != "json_schema"]
        self.input_checks: list[Check | None] = [None] * len(self.inputs)  # check_for's, kept with the plan
        self.outputs = [s for s in specs.values() if "output" in s.stages]
        self.stream_guard = any("output" in s.stages and s.name in ("pii", "keywords") for s in specs.values())


class _Prompt:
    """The request's text, gathered once for all the checks of a request: the slots of every role in one walk of
    the body (the untrusted roles' are a subset of them), their texts joined again only after a redaction."""

    __slots__ = ("_all", "_everything", "_slots", "_text", "ctx")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self._all: list[Slot] | None = None
        self._slots: list[Slot] | None = None
        self._text: str | None = None
        self._everything: str | None = None

    def slots(self, every_role: bool = False) -> list[Slot]:
        every = self._all
        if every is None:
            every = self._all = prompt_slots(self.ctx.endpoint, self.ctx.body, every_role=True)
        if every_role:
            return every
        if self._slots is None:
            self._slots = [slot for slot in every if slot.role in UNTRUSTED_ROLES]
        return self._slots

    def text(self) -> str:
        if self._text is None:
            self._text = joined(self.slots())
        return self._text

    def everything(self) -> str:
        if self._everything is None:
            self._everything = joined(self.slots(every_role=True))
        return self._everything

    def changed(self) -> None:
        self._text = self._everything = None


def redact(check: Check, text: str, findings: list[Finding]) -> str:
    """A check's own redaction (typed placeholders) when it has one, else [REDACTED] over each finding."""
    redactor = getattr(check, "redact", None)
    if redactor is not None:
        out: str = redactor(text, findings)
        return out
    return replace_spans(text, findings, lambda _kind: REDACTED)


def _record(ctx: RequestContext, spec: GuardrailSpec, result: CheckResult, stage: str, action: str) -> None:
    entry = result.to_dict()
    entry.update(stage=stage, action=action, policy=spec.policy)
    if ctx.guardrails is None:
        ctx.guardrails = [entry]
    else:
        ctx.guardrails.append(entry)


def _message(spec: GuardrailSpec, result: CheckResult, stage: str) -> str:
    what = "prompt" if stage == "input" else "answer"
    kinds = sorted({f.type for f in result.findings})
    found = f" ({', '.join(kinds)})" if kinds else ""
    reason = f": {result.message}" if result.message else ""
    return f"The {what} was blocked by the {spec.name} guardrail{found}{reason}."


def _add(first: Usage | None, second: Usage | None) -> Usage | None:
    if first is None or second is None:
        return second or first
    return Usage(
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
        cached_tokens=first.cached_tokens + second.cached_tokens,
        reasoning_tokens=first.reasoning_tokens + second.reasoning_tokens,
        cache_write_tokens=first.cache_write_tokens + second.cache_write_tokens,
        source=second.source,
    )
