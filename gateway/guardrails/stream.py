"""StreamGuard: output guardrails on a streamed answer, chunk by chunk, through one hold-back window per choice.

Text is released to the client only once no match can still be growing across the next chunk (window.py), so
a phone number split over two chunks is redacted before any of it leaves. A `block` check runs on the window
too: when it fires, the stream ends with an error event and [DONE] (the relay's handling of a GatewayError).
Checks that only `log` see the whole answer once the stream has ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from gateway.errors import GuardrailBlocked
from gateway.guardrails.base import CheckResult, Finding

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.filters.guardrails import GuardrailsFilter
    from gateway.guardrails.build import Check
    from gateway.guardrails.pii import PiiDetector
    from gateway.guardrails.window import HoldbackWindow
    from gateway.policy.decision import GuardrailSpec


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
        from gateway.filters.guardrails import KEYWORD_PLACEHOLDER

        findings = self.detect(text) if findings is None else findings
        parts, at = [], 0
        for finding in findings:
            parts += [text[at : finding.start], _placeholder(finding.type, KEYWORD_PLACEHOLDER)]
            at = finding.end
        parts.append(text[at:])
        return "".join(parts)


def _placeholder(kind: str, default: str) -> str:
    from gateway.guardrails import pii

    if kind in pii.PII_TYPES:
        return f"[{kind.upper()}]"
    return default


class StreamGuard:
    def __init__(
        self, owner: GuardrailsFilter, ctx: RequestContext, specs: Mapping[str, GuardrailSpec], holdback: int
    ) -> None:
        self.owner = owner
        self.ctx = ctx
        output = [s for s in specs.values() if "output" in s.stages and s.name in ("pii", "keywords")]
        self.redacting = [(s, owner.check_for(s)) for s in output if s.action == "redact"]
        self.blocking = [(s, owner.check_for(s)) for s in output if s.action == "block"]
        self.logging = [(s, owner.check_for(s)) for s in output if s.action == "log"]
        self.holdback = holdback
        self.windows: dict[int, HoldbackWindow] = {}
        self.texts: dict[int, list[str]] = {}  # the whole answer, for `log` checks at the end
        self.blocked_by: GuardrailSpec | None = None
        self.finished = False

    def _window(self, index: int) -> HoldbackWindow:
        window = self.windows.get(index)
        if window is None:
            from gateway.guardrails.window import HoldbackWindow

            detector = cast("PiiDetector", _Redactors(self.redacting)) if self.redacting else None
            block = self._block if self.blocking else None
            window = self.windows[index] = HoldbackWindow(detector, holdback=self.holdback, block=block)
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
        # A changed copy: the relay sends the upstream's own bytes for a chunk it gets back unchanged (the same
        # object), so the redacted text must come back as a new one.
        chunk = {**chunk, "choices": [_copy(c) for c in choices]}
        keep = False
        for choice in chunk["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
            content = holder.get(key)
            window = self._window(index)
            released = ""
            if isinstance(content, str) and content:
                if self.logging:
                    self.texts.setdefault(index, []).append(content)
                released = window.feed(content)
                if window.blocked is not None:
                    self._blocked(window.blocked)
            if choice.get("finish_reason") is not None:
                released += window.flush()
                if window.blocked is not None:
                    self._blocked(window.blocked)
            if isinstance(content, str) or released:
                holder[key] = released
            # A chunk that carried only text that is now held back is dropped; one with a role, tool calls or
            # a finish reason still goes out.
            if released or choice.get("finish_reason") is not None or _has_more_than_text(holder, key):
                keep = True
        return chunk if keep or chunk.get("usage") else None

    def _blocked(self, result: CheckResult) -> None:
        spec = self.blocked_by
        assert spec is not None
        self.owner.outcome(self.ctx, spec, result, "output")  # records and raises GuardrailBlocked
        raise GuardrailBlocked("The answer was blocked.", check=spec.name, stage="output")  # outcome raised already

    def finish(self) -> None:
        """The stream has ended: record what the windows found and run the `log` checks on the whole answer."""
        if self.finished:
            return
        self.finished = True
        for spec, _ in self.redacting:
            findings = [f for w in self.windows.values() for f in w.findings]
            mine = [f for f in findings if _belongs(f.type, spec.name)]
            self.owner.outcome(self.ctx, spec, CheckResult(spec.name, 1.0 if mine else 0.0, mine, bool(mine)), "output")
        for spec, check in self.logging:
            text = "\n".join("".join(parts) for parts in self.texts.values())
            self.owner.outcome(self.ctx, spec, check.check(text), "output")


def _belongs(kind: str, check: str) -> bool:
    from gateway.guardrails import pii

    return (kind in pii.PII_TYPES) == (check == "pii")


def _has_more_than_text(holder: dict[str, Any], key: str) -> bool:
    return any(k != key and v is not None for k, v in holder.items())


def _copy(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    copied = dict(choice)
    if isinstance(copied.get("delta"), dict):
        copied["delta"] = dict(copied["delta"])
    return copied
