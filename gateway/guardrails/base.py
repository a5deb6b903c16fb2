"""What every check returns: a CheckResult with a score and Findings (types and positions, never the text)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

REDACTED = "[REDACTED]"  # the placeholder of a finding with no typed one (a keyword)

# The strictest wins when two policies name the same check.
ACTIONS = ("block", "redact", "log")
_STRICTNESS = {"block": 3, "redact": 2, "retry": 2, "log": 1}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found: its type and where (character offsets), never the matched text."""

    type: str
    start: int
    end: int
    score: float = 1.0

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type, "start": self.start, "end": self.end}
        if self.score != 1.0:
            out["score"] = round(self.score, 3)
        return out


@dataclass(slots=True)
class CheckResult:
    check: str
    score: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    triggered: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "check": self.check,
            "score": round(self.score, 3),
            "triggered": self.triggered,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.message:
            out["message"] = self.message
        return out


def strictest(a: str, b: str) -> str:
    return a if _STRICTNESS.get(a, 0) >= _STRICTNESS.get(b, 0) else b


def replace_spans(text: str, findings: list[Finding], placeholder: Callable[[str], str]) -> str:
    """`text` with each finding's span replaced by the placeholder of its type; a span overlapping an earlier
    one is skipped. The one redaction every check and the stream window use."""
    if not findings:
        return text
    parts: list[str] = []
    at = 0
    for finding in sorted(findings, key=lambda f: f.start):
        if finding.start < at:
            continue
        parts += [text[at : finding.start], placeholder(finding.type)]
        at = finding.end
    parts.append(text[at:])
    return "".join(parts)
