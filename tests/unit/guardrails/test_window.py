"""The hold-back window: nothing of a match split across chunks leaves before it is redacted."""

from __future__ import annotations

import random
import string

import pytest

from gateway.guardrails.base import CheckResult, Finding
from gateway.guardrails.keywords import KeywordCheck
from gateway.guardrails.pii import PiiDetector
from gateway.guardrails.window import HoldbackWindow

DETECTOR = PiiDetector()
ANSWER = (
    "Sure. You can reach our office at +44 20 7946 0958 or mail help@example.com, any weekday. "
    "The card on file is 4111 1111 1111 1111 and the refund goes to GB82 WEST 1234 5698 7654 32."
)
REDACTED = (
    "Sure. You can reach our office at [PHONE] or mail [EMAIL], any weekday. "
    "The card on file is [CARD] and the refund goes to [IBAN]."
)


def stream(window: HoldbackWindow, chunks: list[str]) -> str:
    """Feeds the chunks and flushes; every release must extend what was sent with redacted text only."""
    sent = ""
    for chunk in chunks:
        sent += window.feed(chunk)
        assert REDACTED.startswith(sent), sent
    return sent + window.flush()


def test_the_answer_redacts_as_a_whole() -> None:
    assert DETECTOR.redact(ANSWER) == REDACTED


@pytest.mark.parametrize("split", range(1, len(ANSWER)))
def test_a_split_anywhere_never_leaks(split: int) -> None:
    # Released text is never taken back: the whole output equalling the redaction means no fragment ever leaked.
    window = HoldbackWindow(DETECTOR, holdback=32)
    assert stream(window, [ANSWER[:split], ANSWER[split:]]) == REDACTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 33, 64])
def test_every_chunk_size(size: int) -> None:
    chunks = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]
    assert stream(HoldbackWindow(DETECTOR), chunks) == REDACTED
    assert stream(HoldbackWindow(DETECTOR, holdback=44), chunks) == REDACTED


def test_findings_have_offsets_in_the_whole_answer() -> None:
    window = HoldbackWindow(DETECTOR, holdback=44)
    for ch in ANSWER:
        window.feed(ch)
    window.flush()
    assert window.findings == DETECTOR.detect(ANSWER)
    assert [ANSWER[f.start : f.end] for f in window.findings] == [
        "+44 20 7946 0958",
        "help@example.com",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
    ]


def test_clean_text_comes_out_byte_identical() -> None:
    rng = random.Random(3)
    text = "Voilà — the quick brown fox 🦊 jumps over the lazy dog at 10:30 on 2024-05-17, v1.2.3.\n" * 20
    for holdback in (0, 8, 64):
        window = HoldbackWindow(DETECTOR, holdback=holdback)
        out, at = [], 0
        while at < len(text):
            step = rng.randint(1, 9)
            out.append(window.feed(text[at : at + step]))
            at += step
        out.append(window.flush())
        assert "".join(out) == text
        assert window.findings == []


def test_release_starts_as_soon_as_more_than_the_holdback_arrived() -> None:
    window = HoldbackWindow(DETECTOR, holdback=10)
    text = "The quick brown fox jumps over the lazy dog, twice."
    assert window.feed(text[:10]) == ""  # not more than the hold-back yet
    assert window.feed(text[10:11]) == "T"
    assert window.feed(text[11:15]) == "he q"
    assert window.flush() == text[5:15]
    assert window.flush() == ""


def test_a_match_is_held_whole_until_complete() -> None:
    window = HoldbackWindow(DETECTOR, holdback=8)
    assert window.feed("call +1 415 555 ") == "call "  # "+1 415 555" reads as a phone already: held from its start
    assert window.feed("2671 now, thanks") + window.flush() == "[PHONE] now, thanks"
    assert len(window.findings) == 1


def test_context_already_sent_still_counts() -> None:
    # "password=" and "BSN" leave before the value arrives; the value is found all the same.
    window = HoldbackWindow(DETECTOR, holdback=8)
    chunks = ["Set password=", "hunter2hunter", " and done. BSN: ", "111222333", " ok."]
    out = "".join(window.feed(chunk) for chunk in chunks) + window.flush()
    assert out == "Set password=[SECRET] and done. BSN: [NATIONAL_ID] ok."
    assert len(HoldbackWindow(DETECTOR, holdback=8, context=0).feed("Set password=hunter2hunter")) > len("Set ")


def test_a_match_longer_than_the_hold_is_redacted_piecewise() -> None:
    rng = random.Random(5)
    token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(3000))
    text = f"Here it is: {token} - keep it safe."
    window = HoldbackWindow(DETECTOR, holdback=32, max_hold=256)
    out = []
    for i in range(0, len(text), 7):
        out.append(window.feed(text[i : i + 7]))
        assert len(window.pending) <= 256 + 32 + 7
    joined = "".join(out) + window.flush()
    assert joined.startswith("Here it is: [SECRET]")
    assert joined.endswith(" - keep it safe.")
    assert joined[len("Here it is: ") : -len(" - keep it safe.")].replace("[SECRET]", "") == ""
    assert all(f.type == "secret" for f in window.findings)


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


def test_a_block_at_the_end_of_the_stream() -> None:
    def block(text: str) -> CheckResult | None:
        return CheckResult("keywords", 1.0, triggered=True) if "forbidden" in text else None

    window = HoldbackWindow(DETECTOR, holdback=64, block=block)
    assert window.feed("short and forbidden") == ""
    assert window.flush() == ""
    assert window.blocked is not None


def test_the_detector_sees_a_bounded_window() -> None:
    seen: list[int] = []

    class Counting:
        def detect(self, text: str) -> list[Finding]:
            seen.append(len(text))
            return []

        def redact(self, text: str, findings: list[Finding] | None = None) -> str:
            return text

    window = HoldbackWindow(Counting(), holdback=8, context=16)
    for _ in range(200):
        window.feed("abcd")
    assert max(seen) <= 16 + 8 + 4


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="holdback"):
        HoldbackWindow(DETECTOR, holdback=-1)
    with pytest.raises(ValueError, match="max_hold"):
        HoldbackWindow(DETECTOR, holdback=64, max_hold=10)
