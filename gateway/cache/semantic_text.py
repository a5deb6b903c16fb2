"""The words of a last user turn that say what it asks: lowercased, contractions spelt out, courtesy phrases and
English function words dropped, each word crudely stemmed. Politeness ("could you please", "thanks"),
contractions ("what's", "don't") and small words ("the", "a", "is") are most of what separates two wordings of
one question; the local embedding embeds this form (semantic_embed.py) and the veto compares it (veto.py).
Negations, numbers and question words stay: they change the answer."""

from __future__ import annotations

import re

__all__ = ["content_words", "normalize_turn"]


def _words(text: str) -> list[str]:
    return text.split()


_CONTRACTIONS = (
    (re.compile(r"\b(can)'t\b"), r"\1 not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"\b(what|that|it|there|here|who|where|how|when)'s\b"), r"\1 is"),
    (re.compile(r"\blet's\b"), "let us"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), ""),  # a possessive: "France's capital" is "France capital"
)
_COURTESY = re.compile(
    r"\b(?:please|pls|plz|kindly|thanks|thank you|cheers|hi|hello|hey|quick question|by any chance|"
    r"(?:could|can|would|will) you(?: please)?(?: help me)?(?: tell me| explain| let me know)?|"
    r"i (?:would|'d) (?:like|love) to (?:know|learn|understand)|i (?:want|need) to know|i wonder|i was wondering|"
    r"do you know|tell me|let me know|help me understand|i am curious|curious)\b"
)
# English function words: frequent in every question, so they make different questions look alike. Negations
# stay (they change the answer), and so do question words (what, how, why... ask different things).
_FUNCTION_WORDS = frozenset(
    _words(
        "a an the is are was were be been being am do does did of to in on at for with about from by as "
        "into onto and or but if so that this these those it its i me my we our you your they them their "
        "he she his her some any just really actually basically also there here would should could can "
        "will shall may might must have has had get got"
    )
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def normalize_turn(text: str) -> str:
    """The turn as the local embedding should see it: lowercased, contractions spelt out, courtesy and English
    function words dropped."""
    low = text.lower().replace("’", "'")
    for pattern, repl in _CONTRACTIONS:
        low = pattern.sub(repl, low)
    low = _COURTESY.sub(" ", low)
    words = [w for w in _WORD.findall(low) if w not in _FUNCTION_WORDS]
    return " ".join(words) if words else low


# How a request is put, not what it is about: "convert 5 km into m" and "what is 5 km in m" ask the same.
_REQUEST_WORDS = frozenset(
    _words("what which convert calculate compute show give list explain describe find translate need like know")
)
_SUFFIXES = ("ing", "ly", "ed", "es", "s")


def content_words(normalized: str) -> list[str]:
    """The normalized turn's words in order, crudely stemmed ("drinking" and "drinks" are "drink"): for comparing
    two turns word by word, not for reading."""
    return [_stem(w) for w in normalized.split() if w not in _REQUEST_WORDS]


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word
