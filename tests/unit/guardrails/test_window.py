"""The hold-back window: nothing of a match split across chunks leaves before it is redacted."""

from __future__ import annotations

import pytest

from gateway.guardrails.base import CheckResult, Finding
from gateway.guardrails.keywords import KeywordCheck
from gateway.guardrails.pii import PiiDetector
from gateway.guardrails.window import HoldbackWindow

ANSWER = "Sure. You can reach our office at +44 20 7946 0958 or mail help@example.com, any weekday."
SECRETS = ("7946", "0958", "help@example.com")


def stream(window: HoldbackWindow, chunks: list[str]) -> str:
    out = [window.feed(chunk) for chunk in chunks]
    out.append(window.flush())
    return "".join(out)


@pytest.mark.parametrize("split", range(1, len(ANSWER)))
def test_a_split_anywhere_never_leaks(split: int) -> None:
    window = HoldbackWindow(PiiDetector(), holdback=32)
    sent = []
    for chunk in (ANSWER[:split], ANSWER[split:]):
        released = window.feed(chunk)
        sent.append(released)
        assert not any(s in "".join(sent) for s in SECRETS)
    sent.append(window.flush())
    assert "".join(sent) == "Sure. You can reach our office at [PHONE] or mail [EMAIL], any weekday."


def test_character_by_character() -> None:
    window = HoldbackWindow(PiiDetector(), holdback=24)
    released = [window.feed(ch) for ch in ANSWER]
    joined = "".join(released)
    assert not any(s in joined for s in SECRETS)
    assert joined + window.flush() == "Sure. You can reach our office at [PHONE] or mail [EMAIL], any weekday."
    assert [f.type for f in window.findings] == ["phone", "email"]
    assert ANSWER[window.findings[0].start : window.findings[0].end] == "+44 20 7946 0958"
    assert ANSWER[window.findings[1].start : window.findings[1].end] == "help@example.com"


def test_clean_text_comes_out_unchanged_and_starts_after_the_holdback() -> None:
    window = HoldbackWindow(PiiDetector(), holdback=10)
    text = "The quick brown fox jumps over the lazy dog, twice."
    assert window.feed(text[:10]) == ""  # not more than the hold-back yet
    first = window.feed(text[10:15])
    assert first == text[:5]
    assert first + window.feed(text[15:]) + window.flush() == text


def test_a_block_stops_releasing() -> None:
    keywords = KeywordCheck(deny=["launch codes"])

    def block(text: str) -> CheckResult | None:
        result = keywords.check(text)
        result.triggered = bool(result.findings)
        return result

    window = HoldbackWindow(None, holdback=16, block=block)
    sent = window.feed("Here is a long harmless preamble of text. ")
    sent += window.feed("And the launch ")
    assert window.blocked is None
    sent += window.feed("codes are 1234.")
    assert window.blocked is not None
    assert window.blocked.findings
    assert "launch codes" not in sent
    assert window.feed("more") == ""
    assert window.flush() == ""


def test_the_detector_sees_only_unsent_text() -> None:
    seen: list[int] = []

    class Counting:
        def detect(self, text: str) -> list[Finding]:
            seen.append(len(text))
            return []

        def redact(self, text: str, findings: list[Finding] | None = None) -> str:
            return text

    window = HoldbackWindow(Counting(), holdback=8)
    for _ in range(200):
        window.feed("abcd")
    assert max(seen) <= 8 + 4
