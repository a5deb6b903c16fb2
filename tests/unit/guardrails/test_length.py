from __future__ import annotations

import pytest

from gateway.guardrails.length import LengthCheck


def words(text: str) -> int:
    """A stand-in tokenizer: one token a word."""
    return len(text.split())


def test_no_caps_never_trigger() -> None:
    result = LengthCheck().check("x" * 100_000)
    assert not result.triggered
    assert result.score == 0.0
    assert result.findings == []


def test_char_cap() -> None:
    check = LengthCheck(max_chars=4000)
    assert not check.check("x" * 4000).triggered
    result = check.check("x" * 5210)
    assert result.triggered
    assert result.check == "length"
    assert result.score == 1.0
    assert result.message == "prompt is 5,210 characters; the limit is 4,000"
    [finding] = result.findings
    # The part past the cap.
    assert (finding.type, finding.start, finding.end) == ("length.chars", 4000, 5210)


def test_score_is_the_share_of_the_cap_used() -> None:
    assert LengthCheck(max_chars=100).check("x" * 25).score == 0.25
    assert LengthCheck(max_tokens=10, count_tokens=words).check("a b c d e").score == 0.5


def test_token_cap() -> None:
    check = LengthCheck(max_tokens=4000, count_tokens=words)
    assert not check.check("w " * 4000).triggered
    text = "w " * 5210
    result = check.check(text)
    assert result.triggered
    assert result.message == "prompt is 5,210 tokens; the limit is 4,000"
    [finding] = result.findings
    assert (finding.type, finding.start, finding.end) == ("length.tokens", 0, len(text))


def test_tokens_are_counted_only_when_needed() -> None:
    calls: list[str] = []

    def counting(text: str) -> int:
        calls.append(text)
        return words(text)

    LengthCheck(max_chars=10, count_tokens=counting).check("a b c")  # no token cap
    assert calls == []
    result = LengthCheck(max_chars=10, max_tokens=100, count_tokens=counting).check("x " * 50)
    assert result.findings[0].type == "length.chars"
    assert calls == []  # the free check already refused it
    LengthCheck(max_chars=1000, max_tokens=100, count_tokens=counting).check("a b c")
    assert calls == ["a b c"]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_tokens": 10}, "token counter"),
        ({"max_chars": -1}, "positive"),
        ({"max_tokens": -5, "count_tokens": words}, "positive"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        LengthCheck(**kwargs)  # type: ignore[arg-type]
