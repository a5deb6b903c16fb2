"""HoldbackWindow: streamed text released only once it can no longer be part of a match.

The window keeps the text not yet sent. Each time a chunk arrives and more than `holdback` characters wait, the
detector runs over them, together with the last `context` characters already sent: patterns look behind a value
(`password=`, the word BSN before a Dutch id, a lookbehind that stops a match mid-word) and that text may have
left already. Everything but the last `holdback` characters is then released, redacted, except that a release
never cuts through a match: it stops at the match's start, so the whole match is redacted once it is complete. A
match can only straddle the cut if it is longer than the hold-back, so a hold-back longer than any value to catch
means nothing to redact leaves early. The default, 64, covers cards, phones, e-mails, most keys and IBANs written
in groups (up to 42 characters).

Longer matches (a key blob, a JWT) are caught piecewise: a match that began in text already sent cannot be
unsent, so the rest of it is redacted as it comes, and a match held past `max_hold` characters is redacted up to
the cut and continued. The detector sees at most `context` + the unsent text, so the cost per chunk is bounded by
the window, never the length of the answer.

`block` (keywords, or PII with action block) runs on the same text; when it fires, nothing more is released and
`blocked` says why, for the caller to end the stream with an error.
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
        *,
        context: int = 64,
        max_hold: int = 4096,
    ) -> None:
        if holdback < 0 or context < 0 or max_hold < holdback:
            raise ValueError("holdback and context must be >= 0 and max_hold >= holdback")
        self.detector = detector
        self.holdback = holdback
        self.block = block
        self.context = context
        self.max_hold = max_hold
        self.pending = ""
        self.sent_tail = ""  # the last `context` characters released, as written (not redacted)
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
        sent = len(self.sent_tail)
        text = self.sent_tail + self.pending
        if self.block is not None:
            result = self.block(text)
            if result is not None and result.triggered:
                self.blocked = result
                self.pending = ""
                return ""
        # Matches wholly inside the sent context were redacted when they were released.
        findings = [f for f in self.detector.detect(text) if f.end > sent] if self.detector is not None else []
        limit = len(text) if final else len(text) - self.holdback
        cut = limit
        for finding in findings:
            if finding.start < cut < finding.end:
                cut = max(finding.start, sent)  # never send half a match: hold it whole until it is complete
        if len(text) - cut > self.max_hold:
            cut = limit  # a match too long to hold: redact what has come, the rest follows as a continuation
        # Spans of what goes now, clipped to the unsent text: a match begun in sent text loses only its rest.
        done = [
            Finding(f.type, max(f.start, sent), min(f.end, cut), f.score)
            for f in findings
            if max(f.start, sent) < min(f.end, cut)
        ]
        released = text[sent:cut]
        if done and self.detector is not None:
            released = self.detector.redact(released, [Finding(f.type, f.start - sent, f.end - sent) for f in done])
            base = self.offset - sent
            self.findings += [Finding(f.type, f.start + base, f.end + base, f.score) for f in done]
        self.offset += cut - sent
        self.pending = text[cut:]
        self.sent_tail = text[:cut][-self.context :] if self.context else ""
        return released
