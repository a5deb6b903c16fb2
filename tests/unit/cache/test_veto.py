"""The false-hit veto: each kind of token that changes the answer refuses a hit, and the rewordings it must let
through (contractions, politeness, reordered clauses, another first word) pass."""

from __future__ import annotations

import pytest

from gateway.cache.veto import fingerprint, veto


def reason(a: str, b: str) -> str | None:
    return veto(fingerprint(a), fingerprint(b))


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("How many calories are in 3 eggs?", "How many calories are in 4 eggs?", "number"),
        ("What is 2 + 3?", "What is 2 * 3?", "number"),
        ("Convert 5 km to miles", "Convert 5 miles to km", "number"),  # the same numbers and units, swapped
        ("Convert 1,000 km to miles", "Convert 100 km to miles", "number"),
        ("How many calories in five eggs?", "How many calories in six eggs?", "number"),
        ("Convert 5 km to miles", "Convert 5 km to feet", "unit"),
        ("Bake at 180°C for how long?", "Bake at 180°F for how long?", "unit"),
        ("What's on in Sydney this weekend?", "What's on in Sydney next weekend?", "date"),
        ("Weather in Paris on Monday?", "Weather in Paris on Tuesday?", "date"),
        ("What happened on May 3?", "What happened on June 3?", "date"),
        ("What's the weather in Paris?", "What's the weather in London?", "name"),
        ("London weather tomorrow?", "Paris weather tomorrow?", "name"),  # names that start the sentence
        ("How do I sort a list in Python?", "How do I sort a list in Rust?", "name"),
        ("Which foods are safe for dogs?", "Which foods are not safe for dogs?", "negation"),
        ("Should I take it with food?", "Shouldn't I take it with food?", "negation"),
        ("Who wrote Don Quixote?", "Qui a écrit Don Quixote ?", "language"),
        ("Anna Karenina was written by whom?", "Qui a écrit Anna Karenina ?", "language"),  # "was" is German too
        ("Who wrote Pride and Prejudice?", "¿Quién escribió Pride and Prejudice?", "language"),
        ("What is the capital of Japan?", "日本の首都はどこですか?", "language"),
        ("How many calories are in 3 eggs?", "How many calories are in 3 bananas?", "topic"),
        ("How long is the flight from Madrid to Boston?", "How long is the flight from Boston to Madrid?", "order"),
        ("Divide 6 by 2", "Divide 2 by 6", "order"),
    ],
)
def test_each_kind_of_difference_vetoes(a: str, b: str, kind: str) -> None:
    assert reason(a, b) == kind
    assert reason(b, a) == kind


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What's the weather in Paris on Friday?", "On Friday, what is the weather going to be in Paris?"),
        ("Could you please convert 1,000 km to miles?", "How many miles is 1000 km?"),
        ("How many miles is 5 km?", "Convert 5 km to miles"),  # the unit stays with its number
        ("Why isn't Lisbon's tap water safe to drink?", "Why is it not safe to drink tap water in Lisbon?"),
        ("Bake a cake at 180°C: how long?", "How long should I bake a cake at 180 °C?"),
        ("May I ask how to bake bread?", "How do I bake bread?"),  # "May" is not a month here
        ("Which weekday was July 4, 1999?", "What day of the week was July 4th, 1999?"),
        ("Read a file one line at a time", "Read a file line by line"),  # "one" is not a number here
        ("Flying from Rome to Tokyo, how long does it take?", "How long is the flight from Rome to Tokyo?"),
    ],
)
def test_rewordings_pass(a: str, b: str) -> None:
    assert reason(a, b) is None


def test_a_fingerprint_reads_what_it_says() -> None:
    fp = fingerprint("Convert $1,500 to euros by next Friday, not in Berlin")
    assert fp.numbers == ("1500",)
    assert fp.quantities == ("1500 usd",)
    assert fp.units == ("eur", "usd")
    assert fp.dates == ("next friday",)
    assert fp.names == ("berlin",)
    assert fp.negations == 1
    assert (fp.script, fp.language) == ("latn", "en")
