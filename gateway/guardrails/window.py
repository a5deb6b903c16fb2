"""HoldbackWindow: streamed text released only once it can no longer be part of a match.

The window keeps the text not yet sent. Each time a chunk arrives, the detector runs over it; everything but the
last `holdback` characters may go, except that a release never cuts through a match (it stops at the match's
start, so the whole match is redacted together once it is complete). A match can only straddle the cut if it is
longer than the hold-back, so a hold-back longer than any value to catch (64 characters by default: a card, an
IBAN, a phone or an e-mail) means nothing to redact ever leaves early. The detector only ever sees the unsent
text, so the cost per chunk is bounded by the hold-back plus the chunk, never the length of the answer.

`block` (keywords, or PII with action block) runs on the same unsent text; when it fires, nothing more is
released and `blocked` says why, for the caller to end the stream with an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.guardrails.base import CheckResult, Finding


class Detector(Protocol):
    def detect(self, text: str) -> list[Finding]: ...

    def redact(self, text: str, findings: list[Finding] | None = None) -> str: ...


class HoldbackWindow:
    """Releases streamed text only once it can no longer be part of a match: keeps the last `holdback` characters."""

    def __init__(
        self,
        detector: Detector | None,
        holdback: int = 64,
        block: Callable[[str], CheckResult | None] | None = None,
    ) -> None:
        self.detector = detector
        self.holdback = holdback
        self.block = block
        self.pending = ""
        self.offset = 0  # where `pending` starts in the whole answer
        self.findings: list[Finding] = []  # everything redacted so far, offsets in the whole answer
        self.blocked: CheckResult | None = None

    def feed(self, text: str) -> str:
        """The text safe to send now (redacted), possibly empty."""
        if self.blocked is not None:
            return ""
        self.pending += text
        if len(self.pending) <= self.holdback:
            return ""
        return self._release(final=False)

    def flush(self) -> str:
        """The end of the stream: everything left, redacted."""
        if self.blocked is not None or not self.pending:
            return ""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        text = self.pending
        if self.block is not None:
            result = self.block(text)
            if result is not None and result.triggered:
                self.blocked = result
                self.pending = ""
                return ""
        findings = self.detector.detect(text) if self.detector is not None else []
        cut = len(text) if final else len(text) - self.holdback
        for finding in findings:
            if finding.start < cut < finding.end:
                cut = finding.start  # never send half a match: hold it whole until it is complete
        done = [f for f in findings if f.end <= cut]
        released = text[:cut]
        if done and self.detector is not None:
            released = self.detector.redact(released, done)
            self.findings += [Finding(f.type, f.start + self.offset, f.end + self.offset, f.score) for f in done]
        self.pending = text[cut:]
        self.offset += cut
        return released
