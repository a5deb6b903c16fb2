from __future__ import annotations

import pytest

from gateway.guardrails.keywords import MAX_FINDINGS, KeywordCheck


def spans(check: KeywordCheck, text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in check.check(text).findings]


def test_deny_words_case_insensitive() -> None:
    check = KeywordCheck(deny=["Secret", "password"])
    result = check.check("The PASSWORD is secret.")
    assert result.triggered
    assert result.score == 1.0
    assert result.message == "matched keyword"
    assert spans(check, "The PASSWORD is secret.") == [("keyword", "PASSWORD"), ("keyword", "secret")]


def test_whole_words() -> None:
    check = KeywordCheck(deny=["class"])
    assert spans(check, "a class, classic, subclass, class_name, classes, 'class'") == [
        ("keyword", "class"),
        ("keyword", "class"),
    ]
    loose = KeywordCheck(deny=["class"], whole_words=False)
    assert len(loose.check("a class, classic, subclass").findings) == 3


def test_phrases_match_any_whitespace() -> None:
    check = KeywordCheck(deny=["credit card number"])
    text = "send me your Credit  Card\nNumber please"
    assert spans(check, text) == [("keyword", "Credit  Card\nNumber")]
    assert not check.check("credit-card number").findings


def test_longest_term_wins() -> None:
    check = KeywordCheck(deny=["card", "credit card"])
    assert spans(check, "my credit card") == [("keyword", "credit card")]


def test_topics_and_overlapping_lists() -> None:
    check = KeywordCheck(deny=["heroin"], topics={"drugs": ["heroin", "cocaine"], "medical": ["dosage"]})
    text = "Heroin dosage and cocaine"
    assert spans(check, text) == [
        ("keyword", "Heroin"),
        ("topic.drugs", "Heroin"),
        ("topic.medical", "dosage"),
        ("topic.drugs", "cocaine"),
    ]
    assert check.check(text).message == "matched keyword, topic.drugs, topic.medical"


def test_unicode_terms() -> None:
    check = KeywordCheck(deny=["naïve", "Straße", "секрет"], topics={"jp": ["東京"]}, whole_words=True)
    text = "NAÏVE approach; die STRASSE und die straße; СЕКРЕТ; секреты; 東京"
    # Case-insensitive by lowercasing: "STRASSE" is not "straße". A CJK term inside CJK-free spacing still matches.
    assert spans(check, text) == [
        ("keyword", "NAÏVE"),
        ("keyword", "straße"),
        ("keyword", "СЕКРЕТ"),
        ("topic.jp", "東京"),
    ]


def test_positions_survive_a_character_that_lowercases_longer() -> None:
    check = KeywordCheck(deny=["istanbul"])
    text = "İİ İstanbul"
    assert spans(check, text) == [("keyword", "İstanbul")]


def test_terms_with_punctuation() -> None:
    check = KeywordCheck(deny=["c++", "node.js"])
    assert spans(check, "I like C++ and Node.js, not c++11 or xnode.js") == [
        ("keyword", "C++"),
        ("keyword", "Node.js"),
    ]


def test_a_rejected_start_does_not_hide_a_later_match() -> None:
    # "ab cd" glued to "x" is rejected at its start; "cd ef" overlaps it and must still be found.
    check = KeywordCheck(deny=["ab cd", "cd ef"])
    assert spans(check, "xab cd ef") == [("keyword", "cd ef")]


def test_special_characters_are_escaped() -> None:
    check = KeywordCheck(deny=["a.b", "(x)"], whole_words=False)
    assert spans(check, "axb a.b (x) x") == [("keyword", "a.b"), ("keyword", "(x)")]


def test_findings_are_capped() -> None:
    result = KeywordCheck(deny=["spam"]).check("spam " * 500)
    assert len(result.findings) == MAX_FINDINGS


@pytest.mark.parametrize("kwargs", [{}, {"deny": ["", "  "]}, {"topics": {"empty": []}}])
def test_nothing_to_match(kwargs: dict[str, object]) -> None:
    result = KeywordCheck(**kwargs).check("anything at all")  # type: ignore[arg-type]
    assert (result.triggered, result.score, result.findings) == (False, 0.0, [])


def test_no_match() -> None:
    result = KeywordCheck(deny=["bomb"]).check("a bombastic speech")
    assert not result.triggered
    assert result.findings == []


TERMS = ["class", "credit card", "credit card number", "card", "c++", "node.js", "spam", "x_y", "2fa"]
TEXTS = [
    "A CLASS on credit card numbers, credit  card number and the card; classic subclass x_y x_yz 2fa 2fas",
    "spam spam, spam! node.js and c++ but not c++11; Credit\nCard Number",
    "nothing to see here",
]


@pytest.mark.parametrize("text", TEXTS)
def test_word_index_agrees_with_the_whole_text_search(text: str) -> None:
    """ASCII prompts go through the word index; the same check with the index turned off must agree."""
    indexed = KeywordCheck(deny=[t for t in TERMS if t[0].isalnum()])
    assert indexed._by_first is not None
    scanning = KeywordCheck(deny=[t for t in TERMS if t[0].isalnum()])
    scanning._by_first = None
    assert indexed.check(text) == scanning.check(text)


def test_terms_that_cannot_be_indexed_fall_back_to_the_search() -> None:
    check = KeywordCheck(deny=["spam", "#tag"])
    assert check._by_first is None
    assert spans(check, "a #tag and spam") == [("keyword", "#tag"), ("keyword", "spam")]


def test_a_long_list_of_terms() -> None:
    check = KeywordCheck(deny=[f"forbidden{i}" for i in range(2000)] + ["bad phrase here"])
    assert not check.check("nothing forbidden here " * 100).findings
    assert spans(check, "say forbidden1999 and BAD phrase here") == [
        ("keyword", "forbidden1999"),
        ("keyword", "BAD phrase here"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Crédit card—credit card «credit card number» naïve card_x card",
        "na\u00efve CARD\u3001\u30ab\u30fc\u30c9 \u0130 card spam\u200bspam",
    ],
)
def test_word_index_agrees_on_non_ascii_prompts(text: str) -> None:
    terms = ["credit card", "credit card number", "card", "na", "spam"]
    indexed = KeywordCheck(deny=terms)
    scanning = KeywordCheck(deny=terms)
    scanning._by_first = None
    assert indexed.check(text) == scanning.check(text)
    assert indexed.check(text).findings
