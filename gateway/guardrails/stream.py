"""StreamGuard: output guardrails on a streamed answer, chunk by chunk, through one hold-back window per choice.

Text is released to the client only once no match can still be growing across the next chunk (window.py), so
a phone number split over two chunks is redacted before any of it leaves. A `block` check runs on the window
too: when it fires, the stream ends with an error event and [DONE] (the relay's handling of a GatewayError).
Checks that only `log` see the whole answer once the stream has ended.

The guard knows nothing of the filter that uses it: it gets its checks built, raises `Blocked` when a `block`
check fires, and hands back what it found at the end (`finish`); recording and refusing are the filter's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from gateway.guardrails.base import CheckResult, Finding, replace_spans

if TYPE_CHECKING:
    from gateway.decision import GuardrailSpec
    from gateway.guardrails.build import Check
    from gateway.guardrails.pii import PiiDetector
    from gateway.guardrails.window import HoldbackWindow


WindowKey = tuple[int, str, int]  # (choice index, content | refusal | tool | text, tool call index)
Checked = list[tuple["GuardrailSpec", "Check"]]


class Blocked(Exception):
    """A `block` check fired on the streamed answer: the filter records it and ends the stream with its error."""

    def __init__(self, spec: GuardrailSpec, result: CheckResult) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.result = result


class _Redactors:
    """The checks that redact, seen by the window as one detector: findings of all, placeholders of each."""

    def __init__(self, checks: list[tuple[GuardrailSpec, Check]]) -> None:
        self.checks = checks

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for _, check in self.checks:
            found += check.check(text).findings
        found.sort(key=lambda f: (f.start, -(f.end - f.start)))
        kept: list[Finding] = []
        for finding in found:  # overlapping findings: the earlier (and longer) one wins
            if not kept or finding.start >= kept[-1].end:
                kept.append(finding)
        return kept

    def redact(self, text: str, findings: list[Finding] | None = None) -> str:
        from gateway.guardrails.pii import placeholder

        return replace_spans(text, self.detect(text) if findings is None else findings, placeholder)


class StreamGuard:
    def __init__(
        self, specs: Mapping[str, GuardrailSpec], check_for: Callable[[GuardrailSpec], Check], holdback: int
    ) -> None:
        output = [s for s in specs.values() if "output" in s.stages and s.name in ("pii", "keywords")]
        self.redacting: Checked = [(s, check_for(s)) for s in output if s.action == "redact"]
        self.blocking: Checked = [(s, check_for(s)) for s in output if s.action == "block"]
        self.logging: Checked = [(s, check_for(s)) for s in output if s.action == "log"]
        self.holdback = holdback
        self.windows: dict[WindowKey, HoldbackWindow] = {}
        self.flushed: list[HoldbackWindow] = []  # windows of ended choices, for their findings
        self.texts: dict[WindowKey, list[str]] = {}  # the whole answer, for `log` checks at the end
        self.last: dict[str, Any] | None = None  # the latest chunk with choices: id, model, created for end_chunks
        self.blocked_by: GuardrailSpec | None = None
        self.finished = False

    def _window(self, key: WindowKey) -> HoldbackWindow:
        window = self.windows.get(key)
        if window is None:
            from gateway.guardrails.window import HoldbackWindow

            detector = cast("PiiDetector", _Redactors(self.redacting)) if self.redacting else None
            block = self._block if self.blocking else None
            window = self.windows[key] = HoldbackWindow(detector, holdback=self.holdback, block=block)
        return window

    def _block(self, text: str) -> CheckResult | None:
        for spec, check in self.blocking:
            result = check.check(text)
            if result.triggered or result.findings:
                result.triggered = True
                self.blocked_by = spec
                return result
        return None

    def on_chunk(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return chunk
        self.last = chunk
        if not self.redacting and not self.blocking:
            # Only `log` checks, which read the whole answer at the end: nothing to hold back nor change, and the
            # chunk goes on as it came (the relay sends the upstream's own bytes).
            self._keep_texts(choices)
            return chunk
        # A changed copy: the relay sends the upstream's own bytes for a chunk it gets back unchanged (the same
        # object), so the redacted text must come back as a new one.
        chunk = {**chunk, "choices": [_copy(c) for c in choices]}
        keep = False
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            if choice.get("logprobs") is not None:
                choice["logprobs"] = None  # token by token, logprobs would spell out what is redacted
            finished = choice.get("finish_reason") is not None
            for key, holder, field in _text_fields(index, choice):
                content = holder.get(field)
                released = ""
                if isinstance(content, str) and content:
                    if self.logging:
                        self.texts.setdefault(key, []).append(content)
                    window = self._window(key)
                    released = window.feed(content)
                    if window.blocked is not None:
                        self._blocked(window.blocked)
                if isinstance(content, str):
                    holder[field] = released
                if released:
                    keep = True
            if finished:
                self._flush_into(index, choice)
                keep = True
            elif _has_more_than_text(choice):
                keep = True
        return chunk if keep or chunk.get("usage") else None

    def _keep_texts(self, choices: list[Any]) -> None:
        for choice in choices:
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                for key, holder, field in _text_fields(index if isinstance(index, int) else 0, _copy(choice)):
                    content = holder.get(field)
                    if isinstance(content, str) and content:
                        self.texts.setdefault(key, []).append(content)

    def _flush_into(self, index: int, choice: dict[str, Any]) -> None:
        """The end of one choice: what its windows still hold goes out with its finish chunk."""
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = None
        for key in [k for k in self.windows if k[0] == index]:
            window = self.windows.pop(key)
            rest = window.flush()
            self.flushed.append(window)
            if window.blocked is not None:
                self._blocked(window.blocked)
            if not rest:
                continue
            kind, sub = key[1], key[2]
            if kind == "text" or delta is None:
                choice["text"] = (choice.get("text") or "") + rest
            elif kind == "tool":
                calls = delta.setdefault("tool_calls", [])
                calls.append({"index": sub, "function": {"arguments": rest}})
            else:
                delta[kind] = (delta.get(kind) or "") + rest

    def end_chunks(self) -> list[dict[str, Any]]:
        """The stream ended with text still held (no finish chunk came): it goes out in one last chunk."""
        if not self.windows or self.last is None:
            return []
        indexes = sorted({key[0] for key in self.windows})
        choices: list[dict[str, Any]] = []
        for index in indexes:
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            if "delta" in (self.last.get("choices") or [{}])[0]:
                choice["delta"] = {}
            self._flush_into(index, choice)
            choices.append(choice)
        base = {k: v for k, v in self.last.items() if k not in ("choices", "usage")}
        return [{**base, "choices": choices}]

    def _blocked(self, result: CheckResult) -> None:
        spec = self.blocked_by
        assert spec is not None
        raise Blocked(spec, result)

    def finish(self) -> list[tuple[GuardrailSpec, CheckResult]]:
        """The stream has ended: what the windows found, and the `log` checks run on the whole answer, for the
        record (once: empty the second time)."""
        if self.finished:
            return []
        self.finished = True
        results: list[tuple[GuardrailSpec, CheckResult]] = []
        for spec, _ in self.redacting:
            findings = [f for w in [*self.flushed, *self.windows.values()] for f in w.findings]
            mine = [f for f in findings if _belongs(f.type, spec.name)]
            results.append((spec, CheckResult(spec.name, 1.0 if mine else 0.0, mine, bool(mine))))
        for spec, check in self.logging:
            text = "\n".join("".join(parts) for parts in self.texts.values())  # every field of every choice
            results.append((spec, check.check(text)))
        return results


def _belongs(kind: str, check: str) -> bool:
    from gateway.guardrails import pii

    return (kind in pii.PII_TYPES) == (check == "pii")


def _text_fields(index: int, choice: dict[str, Any]) -> list[tuple[WindowKey, dict[str, Any], str]]:
    """Where a streamed choice carries text a client reads: content, refusal, each tool call's arguments (chat),
    or text (legacy completions)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return [((index, "text", 0), choice, "text")]
    fields: list[tuple[WindowKey, dict[str, Any], str]] = [((index, "content", 0), delta, "content")]
    if isinstance(delta.get("refusal"), str):
        fields.append(((index, "refusal", 0), delta, "refusal"))
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        copied = []
        for call in calls:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                call = {**call, "function": dict(call["function"])}
                sub = call.get("index", 0)
                fields.append(((index, "tool", sub if isinstance(sub, int) else 0), call["function"], "arguments"))
            copied.append(call)
        delta["tool_calls"] = copied
    return fields


def _has_more_than_text(choice: dict[str, Any]) -> bool:
    """A choice whose chunk carries more than held-back text (a role, a tool call's id and name) still goes out."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    for key, value in delta.items():
        if key == "tool_calls" and isinstance(value, list):
            if any(isinstance(c, dict) and (c.get("id") or (c.get("function") or {}).get("name")) for c in value):
                return True
        elif key not in ("content", "refusal") and value is not None:
            return True
    return False


def _copy(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    copied = dict(choice)
    if isinstance(copied.get("delta"), dict):
        copied["delta"] = dict(copied["delta"])
    return copied
