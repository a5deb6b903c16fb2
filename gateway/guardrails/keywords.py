"""The keyword check: deny-listed words and phrases, and named topics given as lists of terms.

Matching is case-insensitive (on the lowercased text; "STRASSE" is not "straße", since that needs case folding)
and whitespace-tolerant inside a phrase ("credit  card\\nnumber" is "credit card number"). With `whole_words`
(the default) a term matches only where it is not glued to letters, digits or "_" on either side, so "class"
matches neither "classic" nor "subclass"; a term ending in punctuation ("c++") is held to the same rule ("c++11"
does not match). In scripts written without spaces (Chinese, Japanese) a term inside a run of text is glued to
its neighbours: use `whole_words: false` there.

All terms compile, once, into one regex, longest first so that a phrase wins over a word it starts with. It runs
on the lowercased text without `re.IGNORECASE`, which lets the engine skip ahead to the terms' first letters.
Its end boundary is a look-ahead; its start is checked in Python (a look-behind would cost the regex its fast
skip), and a rejected start resumes one character later, so no overlapping match is lost.

A long list makes that regex slow: it tries every term that starts with a letter at each position where that
letter occurs. So with `whole_words`, and terms that start with an ASCII letter or digit (most lists), the check
first splits the prompt into its ASCII words, in C, and looks up which of them begin a term; the regex of the
terms sharing that first word is then tried only where the word occurs. A prompt that uses no listed word costs
one split and one set intersection, however long the list. The whole-text search remains for `whole_words:
false` and for lists with a term that starts otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from gateway.guardrails.base import CheckResult, Finding

__all__ = ["KeywordCheck"]

DENY = "keyword"
# Findings past this many add nothing to the verdict and would only grow the record.
MAX_FINDINGS = 50
# Places a listed word is tried from Python before the rest of the text is left to the regex engine.
MAX_TRIES_PER_WORD = 64
# str.lower() keeps a string's length except for U+0130 (İ, which becomes "i" and a combining dot): replace it
# first so that positions in the lowered text are positions in the original.
_DOTTED_I = "\u0130"
# Splits a prompt's UTF-8 into its ASCII words (letters, digits and "_", as the regex's \w has them in ASCII).
# Every other byte splits, other scripts' letters too: that yields every ASCII word that can begin a match, and
# some that cannot ("na" of "naïve"), which the regex then turns down.
_SPLIT_TABLE = bytes(c if chr(c).isalnum() or c == ord("_") else 32 for c in range(128)) + b" " * 128


def _lower(text: str) -> str:
    return (text.replace(_DOTTED_I, "i") if _DOTTED_I in text else text).lower()


def _key(term: str) -> str:
    return " ".join(_lower(term).split())


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _compile(keys: Sequence[str], whole_words: bool) -> re.Pattern[str]:
    alternatives = "|".join(r"\s+".join(map(re.escape, k.split(" "))) for k in sorted(keys, key=len, reverse=True))
    # With whole words, the end is checked here: a failed look-ahead backtracks to a shorter term.
    return re.compile(f"(?:{alternatives})(?!\\w)" if whole_words else f"(?:{alternatives})")


class KeywordCheck:
    """`deny`: terms whose use triggers the check (finding type `keyword`); `topics`: name → terms, each match a
    finding of type `topic.<name>`. Any match triggers; the score is 1.0 when one did, else 0.0."""

    name = "keywords"

    def __init__(
        self, deny: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None, whole_words: bool = True
    ) -> None:
        self.whole_words = whole_words
        # A term may be in the deny list and in several topics: one match reports each of them.
        labels: dict[str, list[str]] = {}
        for term in deny:
            if key := _key(term):
                labels.setdefault(key, []).append(DENY)
        for topic, terms in (topics or {}).items():
            for term in terms:
                if key := _key(term):
                    labels.setdefault(key, []).append(f"topic.{topic}")
        self._labels = {key: tuple(dict.fromkeys(names)) for key, names in labels.items()}
        self._regex = _compile(list(self._labels), whole_words) if self._labels else None

        # The word index: terms by their first word. A term that starts with punctuation or another script cannot
        # be found from an ASCII first word, and sends every prompt down the whole-text search.
        by_first: dict[str, list[str]] = {}
        indexable = whole_words
        for key in self._labels:
            first = key.encode("utf-8", "surrogatepass").translate(_SPLIT_TABLE).split(maxsplit=1)
            if not first or not key.isascii() or not _is_word_char(key[0]):
                indexable = False
                break
            by_first.setdefault(first[0].decode(), []).append(key)
        self._by_first = {word: _compile(keys, True) for word, keys in by_first.items()} if indexable else None
        self._first_words = frozenset(w.encode() for w in by_first) if indexable else frozenset()

    def check(self, text: str) -> CheckResult:
        if self._regex is None or not text:
            return CheckResult(self.name)
        low = _lower(text)
        by_first = self._by_first
        spans = self._indexed(low, by_first) if by_first is not None else self._scan(low, self._regex)
        findings: list[Finding] = []
        for start, end in spans:
            findings.extend(Finding(label, start, end) for label in self._labels_of(low[start:end]))
            if len(findings) >= MAX_FINDINGS:
                del findings[MAX_FINDINGS:]
                break
        if not findings:
            return CheckResult(self.name)
        kinds = sorted({f.type for f in findings})
        return CheckResult(
            self.name, score=1.0, findings=findings, triggered=True, message="matched " + ", ".join(kinds)
        )

    def _labels_of(self, matched: str) -> tuple[str, ...]:
        return self._labels.get(" ".join(matched.split()), ())

    def _scan(self, low: str, regex: re.Pattern[str], pos: int = 0, limit: int = MAX_FINDINGS) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        while len(spans) < limit and (m := regex.search(low, pos)) is not None:
            start, end = m.span()
            if self.whole_words and start and _is_word_char(low[start - 1]):
                pos = start + 1
                continue
            spans.append((start, end))
            pos = end if end > start else end + 1
        return spans

    def _indexed(self, low: str, by_first: dict[str, re.Pattern[str]]) -> list[tuple[int, int]]:
        words = self._first_words.intersection(low.encode("utf-8", "surrogatepass").translate(_SPLIT_TABLE).split())
        spans: list[tuple[int, int]] = []
        for word in words:
            first = word.decode()
            regex = by_first[first]
            found: list[tuple[int, int]] = []
            at = low.find(first)
            tries = 0
            # A word's first MAX_FINDINGS matches are enough: the earliest MAX_FINDINGS overall are among them.
            while at != -1 and len(found) < MAX_FINDINGS:
                tries += 1
                if tries > MAX_TRIES_PER_WORD:
                    # The word is everywhere ("spamx spamx ..."): leave the rest of the text to the regex engine.
                    found.extend(self._scan(low, regex, at, MAX_FINDINGS - len(found)))
                    break
                if (not at or not _is_word_char(low[at - 1])) and (m := regex.match(low, at)) is not None:
                    found.append(m.span())
                at = low.find(first, at + 1)
            spans.extend(found)
        # Matches found from different first words may overlap ("ab cd" and "cd ef" in "ab cd ef"): keep the
        # earlier, as the whole-text search would.
        spans.sort()
        kept: list[tuple[int, int]] = []
        for span in spans:
            if not kept or span[0] >= kept[-1][1]:
                kept.append(span)
        return kept
