"""The semantic cache's false-hit veto: two last user turns whose embeddings are close still ask different questions
when they name different numbers, names, dates, units, negations, arithmetic or languages.

An embedding of hashed n-grams (or a learned one) scores "flights from Paris on May 3" and "flights from Paris on
May 4" nearly 1.0: they share every word but one. What tells them apart is a few kinds of token that a paraphrase
keeps and a near miss changes. Each text is reduced once to a `Fingerprint` of those tokens (kept beside the
entry, so a lookup only compares small sets), and `veto()` names the first kind that differs.

What counts, on NFKC-normalized text:
- numbers: digit runs ("1,000" and "1000" are one number, "05" is 5, "3rd" is 3) and number words (one..twenty,
  the tens, hundred, thousand, million, ordinals but "second");
- quantities: a number with the unit after it ("5 km") or the currency sign before it ("$5"), so that "5 km to
  miles" and "5 miles to km" differ although their numbers and units do not;
- units: canonical names ("kilometres", "km" -> km), also standing alone ("convert 5 km to miles");
- dates: months, weekdays, today/tomorrow/yesterday/tonight, "next week", "last year"...; "May" and "March" only
  next to a number or capitalized inside a sentence (they are also a verb);
- names: capitalized words that are not common words (function words, question words, usual imperatives of
  prompts, in the languages below), compared case-insensitively: "Paris" and "London" differ; "paris" is not
  a name, which is a limit (see the README). A capitalized word that starts a sentence may be a verb the lists
  lack: it vetoes only where the other text starts with a word this one lacks too (`_names_differ`);
- negations: how many of not, no, never, n't, without, except... (a paraphrase keeps the count);
- arithmetic: the operators between numbers ("2 + 3" and "2 * 3");
- roles: the word of direction before a number or a name ("from Madrid to Boston", "6 by 2"), where both texts
  have some;
- language: the script, and for Latin script the language whose common words the text uses most (en, fr, de,
  es, it, pt, nl), when that is clear in both texts.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from gateway.cache.semantic_text import content_words, normalize_turn

__all__ = ["Bucket", "Fingerprint", "bucket_of", "fingerprint", "veto"]


def _words(text: str) -> list[str]:
    return text.split()


class Fingerprint(NamedTuple):
    # Sorted tuples, not sets: compared whole, and a tenth of the memory of a frozenset (every cached row has one).
    numbers: tuple[str, ...]
    quantities: tuple[str, ...]
    units: tuple[str, ...]
    dates: tuple[str, ...]
    names: tuple[str, ...]  # capitalized inside a sentence
    initials: tuple[str, ...]  # capitalized at the start of one: a name, or an imperative the lists lack
    negations: int
    operators: str
    script: str
    language: str  # the most likely languages, space-separated: two texts differ when they share none
    words: str  # the normalized turn (semantic_text.py), for the one-word-swapped check
    roles: tuple[str, ...] = ()  # "from:paris", "to:london", "by:2": a number or name after a word of direction


# The fields veto() compares for plain equality: two turns with different buckets are always refused, so the index
# keeps each bucket apart and a lookup searches only its own (semantic_index.py).
Bucket = tuple[object, ...]


def bucket_of(fp: Fingerprint) -> Bucket:
    return (fp.script, fp.units, fp.numbers, fp.quantities, fp.operators, fp.dates, fp.negations)


def veto(a: Fingerprint, b: Fingerprint) -> str | None:
    """The first kind of token that differs between the two texts (the reason the hit is refused), or None."""
    if a.script != b.script or (a.language and b.language and not set(a.language.split()) & set(b.language.split())):
        return "language"
    if a.units != b.units:
        return "unit"
    if a.numbers != b.numbers or a.quantities != b.quantities or a.operators != b.operators:
        return "number"
    if a.dates != b.dates:
        return "date"
    if _names_differ(a, b):
        return "name"
    if a.roles and b.roles and a.roles != b.roles:
        return "order"
    if a.negations != b.negations:
        return "negation"
    if _one_word_swapped(a.words, b.words):
        return "topic"
    return None


def _one_word_swapped(a: str, b: str) -> bool:
    """The same wording with one content word replaced, in its place ("calories in 3 eggs" / "calories in 3
    bananas"): a question about another thing, which the embedding scores high. A rewording moves or adds words."""
    words_a, words_b = content_words(a), content_words(b)
    if len(words_a) != len(words_b) or len(words_a) < 3:
        return False
    return sum(x != y for x, y in zip(words_a, words_b, strict=True)) == 1


_TOKEN = re.compile(r"°\s?[cCfF]\b|\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|[^\W\d_]+(?:['’][^\W\d_]+)*|[$€£¥%°]")
# Words before a number or a name that give it a role: "from Madrid to Boston" is not "from Boston to Madrid",
# nor "divide 6 by 2" "divide 2 by 6".
_DIRECTIONS = frozenset({"from", "to", "into", "than", "by", "between", "vs", "versus", "over", "under", "per"})
_OPERATOR = re.compile(r"(?<=[\d)])\s*([-+*/^×÷=<>])\s*(?=[\d(])")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_SENTENCE_END = re.compile(r"[.!?:;\n]")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty"
        )
    )
}
_NUMBER_WORDS |= {
    w: str(10 * i) for i, w in enumerate(["thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 3)
}
_NUMBER_WORDS |= {"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"}
_NUMBER_WORDS |= {"dozen": "12", "half": "0.5", "twice": "2", "thrice": "3", "double": "2"}
# "one" is a pronoun as often as a number ("one line at a time", "which one"); "a mile" and "one mile" agree.
del _NUMBER_WORDS["one"]
# "second" is also a unit of time and a word of "a second opinion": left to the unit table.
_NUMBER_WORDS |= {
    w: str(i)
    for i, w in enumerate(["first", "_", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"], 1)
    if w != "_"
}

# alias -> canonical unit. Aliases in _UNIT_AFTER_NUMBER only count right after a number ("5 m", "3 s").
_UNITS: dict[str, str] = {}
for _canon, _aliases in {
    "km": "km kms kilometer kilometers kilometre kilometres",
    "m": "m meter meters metre metres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "mm": "mm millimeter millimeters millimetre millimetres",
    "mi": "mi mile miles",
    "ft": "ft foot feet",
    "in": "in inch inches",
    "yd": "yd yard yards",
    "kg": "kg kgs kilo kilos kilogram kilograms kilogramme kilogrammes",
    "g": "g gram grams gramme grammes",
    "mg": "mg milligram milligrams",
    "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces",
    "t": "tonne tonnes ton tons",
    "l": "l liter liters litre litres",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "gal": "gal gallon gallons",
    "cup": "cup cups",
    "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons",
    "°c": "°c celsius centigrade",
    "°f": "°f fahrenheit",
    "k": "kelvin",
    "usd": "usd dollar dollars $",
    "eur": "eur euro euros €",
    "gbp": "gbp sterling £",
    "jpy": "jpy yen ¥",
    "%": "% percent percentage",
    "s": "s sec secs second seconds",
    "min": "min mins minute minutes",
    "h": "h hr hrs hour hours",
    "day": "day days",
    "week": "week weeks",
    "month": "month months",
    "year": "year years yr yrs",
    "mph": "mph",
    "km/h": "kph kmh",
    "kb": "kb kilobyte kilobytes",
    "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes",
    "tb": "tb terabyte terabytes",
    "byte": "byte bytes",
    "bit": "bit bits",
    "w": "w watt watts",
    "kw": "kw kilowatt kilowatts",
    "kwh": "kwh",
    "v": "v volt volts",
    "a": "amp amps ampere amperes",
    "kcal": "kcal calorie calories cal",
    "°": "° degree degrees",
    "px": "px pixel pixels",
}.items():
    for _alias in _aliases.split():
        _UNITS[_alias] = _canon
# Short or common words that are units only right after a number ("5 m", "3 days"; not "day of the week").
_UNIT_AFTER_NUMBER = frozenset(
    _words(
        "m g l s h t in a v w min cal sec secs second seconds minute minutes hour hours day days week "
        "weeks month months year years yr yrs degree degrees"
    )
)
_CURRENCY_SIGNS = frozenset("$€£¥")

_MONTHS = {
    m: str(i)
    for i, names in enumerate(
        (
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sep sept",
            "october oct",
            "november nov",
            "december dec",
        ),
        1,
    )
    for m in names.split()
}
_AMBIGUOUS_MONTHS = frozenset({"may", "march", "mar", "jan", "jun", "jul", "aug", "sep", "oct", "nov", "dec"})
_DAYS = {d: d for d in ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]}
_DAYS |= {"today": "today", "tonight": "tonight", "tomorrow": "tomorrow", "yesterday": "yesterday"}
_DAYS |= {
    s: s
    for s in ["weekend", "spring", "summer", "autumn", "winter", "morning", "afternoon", "evening", "midnight", "noon"]
}
_RELATIVE = frozenset({"next", "last", "this", "previous", "coming", "past"})
_PERIODS = frozenset({"week", "weekend", "month", "year", "day", "quarter", "decade", "century", "night"})

_NEGATIONS = frozenset(
    _words("not no never none nobody nothing neither nor nowhere without cannot non except excluding unless")
)

_LANGUAGES: dict[str, frozenset[str]] = {
    "en": frozenset(
        _words(
            "the is are what how of and to in for with do does can you my i it this that which why when where "
            "should would could will be was there about from me please tell am an have has who did were whom by"
        )
    ),
    "fr": frozenset(
        _words(
            "le la les est sont quel quelle quels quelles comment pourquoi des du et pour avec dans je vous "
            "mon ma une sur pas ne qui que ce cette au aux où est-ce suis mes nous il elle était fera quoi"
        )
    ),
    "de": frozenset(
        _words(
            "der die das ist sind wie was warum wann wo und mit für ich sie mein meine ein eine nicht auf im "
            "den dem zu von es kann können bitte wird werden auch wer hat hatte wurde welche welcher man"
        )
    ),
    "es": frozenset(
        _words(
            "el los las es son qué cómo cuál cuáles por para con y del yo mi una está puedo dónde cuándo "
            "porque muy hay lo tengo se quién quiénes cuánto cuántos cuánta cuántas"
        )
    ),
    "it": frozenset(
        _words(
            "il lo gli è sono che come perché di per con e una non mio dove quando qual quale sul della degli "
            "posso ci si ho"
        )
    ),
    "pt": frozenset(
        _words(
            "o os as é são que como qual por para com em um uma não meu minha onde quando do da dos das posso você tem"
        )
    ),
    "nl": frozenset(
        _words("de het een is zijn wat hoe waarom wanneer waar en met voor ik mijn niet op van te kan je ook")
    ),
}
# Words that start sentences and say nothing of what is asked about: capitalized, they are still not names.
_COMMON = frozenset().union(*_LANGUAGES.values()) | frozenset(
    _words(
        "a an at as or if so but by on off up out into onto than then also just only any all some each "
        "every other another more most less least very much many few such own same both either who whom "
        "whose what's whats how's where's when's who's it's that's there's here's let's he she they we "
        "them us his her their our your its him mine yours ours theirs these those here was were been "
        "being had having did done doing shall may might must need ought tell explain give show list "
        "write describe summarize summarise translate convert find help make create generate compare "
        "calculate compute define name suggest recommend check fix get set use using hi hello hey thanks "
        "thank ok okay yes yeah sure dear is isn't aren't wasn't weren't don't doesn't didn't can't "
        "couldn't won't wouldn't shouldn't haven't hasn't i'm i'd i'll i've you're you'd you'll we're "
        "they're"
    )
)
_DATE_WORDS = frozenset(_MONTHS) | frozenset(_DAYS) | _RELATIVE | _PERIODS

# Letters that only some Latin-script languages use: a word with one counts for them as a common word does.
_LETTERS = {
    "en": frozenset(),
    "fr": frozenset("éèêàçùâîôœë"),
    "de": frozenset("äöüß"),
    "es": frozenset("ñáíóú"),
    "it": frozenset("àèìòù"),
    "pt": frozenset("ãõçáâêô"),
    "nl": frozenset("ĳ"),
}
_SCRIPTS = (  # (first code point, last code point, script): the letters outside Latin that say a language
    (0x0370, 0x03FF, "grek"),
    (0x0400, 0x052F, "cyrl"),
    (0x0590, 0x05FF, "hebr"),
    (0x0600, 0x06FF, "arab"),
    (0x0900, 0x097F, "deva"),
    (0x0E00, 0x0E7F, "thai"),
    (0x3040, 0x30FF, "kana"),
    (0x4E00, 0x9FFF, "hani"),
    (0xAC00, 0xD7AF, "hang"),
)


def fingerprint(text: str, normalized: str | None = None) -> Fingerprint:
    """The tokens of `text` that a paraphrase keeps and a near miss changes (module docstring); `normalized`:
    normalize_turn(text), when the caller has it already."""
    text = unicodedata.normalize("NFKC", text)
    matches = list(_TOKEN.finditer(text))
    lowered = [m.group().lower().replace("’", "'") for m in matches]
    numbers: set[str] = set()
    quantities: set[str] = set()
    units: set[str] = set()
    dates: set[str] = set()
    names: set[str] = set()
    initials: set[str] = set()
    roles: set[str] = set()
    negations = 0
    for i, (m, low) in enumerate(zip(matches, lowered, strict=True)):
        word = m.group()
        prev = lowered[i - 1] if i else ""
        nxt = lowered[i + 1] if i + 1 < len(lowered) else ""
        number = _number(low)
        if number is not None:
            numbers.add(number)
            if prev in _DIRECTIONS:
                roles.add(f"{prev}:{number}")
            unit = _UNITS.get(nxt) if nxt else None
            if unit is None and prev in _CURRENCY_SIGNS:
                unit = _UNITS[prev]
            quantities.add(f"{number} {unit or ''}")
            continue
        if low.endswith("n't") or low in _NEGATIONS:
            negations += 1
        if low in _UNITS and (low not in _UNIT_AFTER_NUMBER or _number(prev) is not None):
            units.add(_UNITS[low])
        date = None
        if low in _MONTHS:
            beside_number = _number(prev) is not None or _number(nxt) is not None
            inside_capitalized = word[0].isupper() and not _starts_sentence(text, matches, i)
            if low not in _AMBIGUOUS_MONTHS or beside_number or inside_capitalized:
                date = "month " + _MONTHS[low]
        elif low in _DAYS:
            date = _DAYS[low]
        elif low in _PERIODS and prev in _RELATIVE:
            date = low
        if date is not None:  # "next weekend" is not "this weekend", nor "last March" "March"
            dates.add(f"{prev} {date}" if prev in _RELATIVE else date)
        if (word[0].isupper() or any(c.isupper() for c in word[1:])) and not (
            low in _COMMON or low in _DATE_WORDS or low in _UNITS or low in _NUMBER_WORDS
        ):
            (initials if _starts_sentence(text, matches, i) else names).add(low.removesuffix("'s"))
            if prev in _DIRECTIONS:
                roles.add(f"{prev}:{low.removesuffix(chr(39) + 's')}")
    script, language = _language(text, lowered)
    operators = "".join(sorted(_OPERATOR.findall(text)))
    return Fingerprint(
        tuple(sorted(numbers)),
        tuple(sorted(quantities)),
        tuple(sorted(units)),
        tuple(sorted(dates)),
        tuple(sorted(names)),
        tuple(sorted(initials)),
        negations,
        operators,
        script,
        language,
        normalize_turn(text) if normalized is None else normalized,
        tuple(sorted(roles)),
    )


def _names_differ(a: Fingerprint, b: Fingerprint) -> bool:
    """A name inside a sentence of one text that the other does not capitalize anywhere, or a word starting a
    sentence in each that the other lacks ("London weather?" and "Paris weather?"). One text's first word alone
    ("Bake at 180 °C" beside "How long do I bake at 180 °C") is taken for the verb it usually is."""
    all_a, all_b = {*a.names, *a.initials}, {*b.names, *b.initials}
    if not all_a.issuperset(b.names) or not all_b.issuperset(a.names):
        return True
    return not all_b.issuperset(a.initials) and not all_a.issuperset(b.initials)


def _number(token: str) -> str | None:
    """The number a token spells, canonical ("1,000" -> "1000", "05" -> "5", "3rd" -> "3", "seven" -> "7")."""
    if not token:
        return None
    if token[0].isdigit():
        token = token.rstrip("stndrh")
        if _THOUSANDS.fullmatch(token):
            token = token.replace(",", "")
        token = token.replace(",", ".")
        whole, dot, frac = token.partition(".")
        whole = whole.lstrip("0") or "0"
        frac = frac.rstrip("0")
        return f"{whole}.{frac}" if dot and frac else whole
    return _NUMBER_WORDS.get(token)


def _starts_sentence(text: str, matches: list[re.Match[str]], i: int) -> bool:
    """Whether token i is the first of the text or follows the end of a sentence (looking only at what lies
    between it and the token before: a scan of the whole prefix per word would be quadratic)."""
    return i == 0 or _SENTENCE_END.search(text, matches[i - 1].end(), matches[i].start()) is not None


def _language(text: str, words: list[str]) -> tuple[str, str]:
    """(script, languages): the script most letters are in, and for Latin the languages whose common words the
    text uses most ("en", or "de en" for a tie: "was" is English and German; "" when it uses none)."""
    plain = text.isascii()
    if plain:  # the common case, without a loop in Python over every character
        if not any(ch.isalpha() for ch in text):
            return "", ""
        script = "latn"
    else:
        counts: dict[str, int] = {}
        for ch in text:
            if ch.isalpha():
                code = ord(ch)
                name = "latn" if code < 0x0370 else next((s for lo, hi, s in _SCRIPTS if lo <= code <= hi), "other")
                counts[name] = counts.get(name, 0) + 1
        if not counts:
            return "", ""
        script = max(sorted(counts), key=counts.__getitem__)
        if script != "latn":
            return script, ""
    scores = sorted(
        (
            (sum(w in common or (not plain and bool(_LETTERS[lang].intersection(w))) for w in words), lang)
            for lang, common in _LANGUAGES.items()
        ),
        reverse=True,
    )
    if not plain and ("¿" in text or "¡" in text):  # only Spanish opens its questions and exclamations so
        scores = sorted(((score + 2 if lang == "es" else score), lang) for score, lang in scores)[::-1]
    best = scores[0][0]
    return script, " ".join(sorted(lang for score, lang in scores if score == best)) if best else ""
