"""The semantic cache's labelled safety set, generated deterministically (seeded): pairs of last user turns.

    python bench/semantic_pairs.py > pairs.jsonl     # {"kind", "category", "a", "b", "a_answer", "b_answer"}

- near misses (`kind` "near-miss"): the same question about something else, which must NOT share an answer.
  Six categories, 100 pairs each: another number, name, date, unit, a negation added or removed, and the same
  question in another language. Half keep the wording and change only the value; half also change the
  wording (so the veto, not the exact words, has to tell them apart).
- paraphrases (`kind` "paraphrase"): one question in two wordings written by hand for each intent, with the
  same values: reordered clauses ("On Friday, what's the weather in Paris?"), synonyms ("author"/"wrote",
  "fly"/"flight"), politeness ("Could you tell me... please?"), contractions ("What's", "isn't") and
  different phrasings (a question against a request against a terse query). No pair differs only by case.

Each intent has 4-6 wordings, optional negated wordings and translations; values are drawn from small lists.
tests/unit/cache/test_semantic_safety.py measures the cache on it at the default min_score.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson


def _words(text: str) -> list[str]:
    return text.split()


CATEGORIES = ("number", "name", "date", "unit", "negation", "language", "topic")
PER_CATEGORY = 100
PARAPHRASES = 600
SEED = 18

CITIES = _words("Paris London Berlin Madrid Rome Tokyo Sydney Toronto Chicago Boston Lisbon Vienna Prague Dublin Oslo")
COUNTRIES = _words("France Germany Spain Italy Japan Brazil Canada Mexico Norway Sweden Poland Egypt Kenya Chile")
PEOPLE = [
    "Albert Einstein", "Marie Curie", "Isaac Newton", "Ada Lovelace", "Charles Darwin", "Nikola Tesla",
    "Jane Austen", "Leo Tolstoy", "Frida Kahlo", "Alan Turing", "Mozart", "Beethoven", "Napoleon",
]  # fmt: skip
BOOKS = [
    "Pride and Prejudice", "War and Peace", "Moby Dick", "Hamlet", "Dracula", "Frankenstein", "Ulysses",
    "Don Quixote", "Great Expectations", "Anna Karenina", "Middlemarch", "Emma",
]  # fmt: skip
LANGS = _words("Python JavaScript Rust Java Ruby Kotlin Swift Haskell Scala Elixir TypeScript Perl")
COMPANIES = _words("Apple Microsoft Google Amazon Tesla Nvidia Intel Netflix Adobe Oracle Samsung Toyota")
LANGUAGES = ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch", "Swedish", "Greek", "Turkish"]
MONTHS = _words("January February March April May June July August September October November December")
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WHEN = ["this weekend", "next weekend", "tomorrow", "today", "next week", "on Friday", "on Sunday", "tonight"]
FOODS = ["eggs", "bananas", "apples", "oranges", "avocados", "potatoes", "carrots", "pancakes"]
NUMBERS = [str(n) for n in (2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 40, 50, 75, 100, 150, 250, 1000)]
TEMPS = [str(n) for n in (150, 160, 170, 175, 180, 190, 200, 220, 350, 375, 400)]
YEARS = [str(n) for n in range(1990, 2025, 3)]
DAYS = [str(n) for n in range(1, 29, 2)]
LENGTH = ["kilometers", "miles", "meters", "feet", "inches", "yards", "centimeters"]
WEIGHT = ["kilograms", "pounds", "ounces", "grams"]
VOLUME = ["liters", "gallons", "cups", "milliliters"]
CURRENCY = ["euros", "dollars", "yen", "pounds sterling"]
DRUGS = ["ibuprofen", "paracetamol", "aspirin", "amoxicillin"]
PETS = ["dogs", "cats", "rabbits", "parrots", "hamsters"]


def _words(text: str) -> list[str]:
    return text.split()


@dataclass
class Intent:
    slots: dict[str, tuple[str, list[str]]]  # slot -> (category it changes, values)
    wordings: list[str]
    negated: list[str] = field(default_factory=list)
    translations: list[str] = field(default_factory=list)


UNIT_DIM = {"u1": "u2"}  # u1 and u2 are drawn from one list of units of the same dimension

INTENTS: list[Intent] = [
    Intent(
        {"city": ("name", CITIES), "day": ("date", WEEKDAYS)},
        [
            "What will the weather be like in {city} on {day}?",
            "Could you tell me the weather forecast for {city} on {day}, please?",
            "On {day}, what's the weather going to be in {city}?",
            "I'd like to know the forecast for {city} for {day}.",
            "What's the forecast in {city} on {day}?",
        ],
        translations=["Quel temps fera-t-il à {city} ce {day} ?", "Wie wird das Wetter in {city} am {day}?"],
    ),
    Intent(
        {"country": ("name", COUNTRIES), "year": ("date", YEARS)},
        [
            "What was the population of {country} in {year}?",
            "How many people lived in {country} in {year}?",
            "In {year}, what was {country}'s population?",
            "Can you give me the population of {country} as of {year}?",
            "What was the number of inhabitants of {country} in {year}?",
        ],
        translations=[
            "Quelle était la population de {country} en {year} ?",
            "Wie viele Einwohner hatte {country} im Jahr {year}?",
            "¿Cuál era la población de {country} en {year}?",
        ],
    ),
    Intent(
        {"n": ("number", NUMBERS), "u1": ("unit", LENGTH), "u2": ("unit", LENGTH)},
        [
            "Convert {n} {u1} to {u2}.",
            "How many {u2} are there in {n} {u1}?",
            "What is {n} {u1} in {u2}?",
            "Please convert {n} {u1} into {u2} for me.",
            "{n} {u1} is how many {u2}?",
        ],
        translations=["Convertis {n} {u1} en {u2}, s'il te plaît.", "Wie viele {u2} sind {n} {u1}?"],
    ),
    Intent(
        {"n": ("number", NUMBERS), "u1": ("unit", WEIGHT), "u2": ("unit", WEIGHT)},
        [
            "How many {u2} is {n} {u1}?",
            "Convert {n} {u1} to {u2}, please.",
            "What's {n} {u1} in {u2}?",
            "I need {n} {u1} expressed in {u2}.",
        ],
    ),
    Intent(
        {"n": ("number", NUMBERS), "u1": ("unit", VOLUME), "u2": ("unit", VOLUME)},
        [
            "How many {u2} are in {n} {u1}?",
            "Could you convert {n} {u1} to {u2}?",
            "{n} {u1} equals how many {u2}?",
            "What does {n} {u1} come to in {u2}?",
        ],
    ),
    Intent(
        {"n": ("number", NUMBERS), "u1": ("unit", CURRENCY), "u2": ("unit", CURRENCY)},
        [
            "How much is {n} {u1} in {u2}?",
            "What are {n} {u1} worth in {u2} today?",
            "Convert {n} {u1} to {u2}.",
            "If I exchange {n} {u1}, how many {u2} do I get?",
        ],
    ),
    Intent(
        {"n": ("number", NUMBERS), "food": ("topic", FOODS)},
        [
            "How many calories are in {n} {food}?",
            "What's the calorie count of {n} {food}?",
            "If I eat {n} {food}, how many calories is that?",
            "Could you tell me how many calories {n} {food} have?",
            "How many calories do {n} {food} contain?",
        ],
    ),
    Intent(
        {"person": ("name", PEOPLE)},
        [
            "How old was {person} when they died?",
            "At what age did {person} die?",
            "When {person} died, how old were they?",
            "What was {person}'s age at the time of death?",
            "Can you tell me the age at which {person} passed away?",
        ],
    ),
    Intent(
        {"person": ("name", PEOPLE)},
        [
            "Where was {person} born?",
            "What is {person}'s birthplace?",
            "In which city was {person} born?",
            "Tell me where {person} was born, please.",
            "Where did {person} come into the world?",
        ],
        translations=["Où est né {person} ?", "Wo wurde {person} geboren?", "¿Dónde nació {person}?"],
    ),
    Intent(
        {"book": ("name", BOOKS)},
        [
            "Who wrote {book}?",
            "Who is the author of {book}?",
            "Could you tell me who wrote {book}?",
            "Which author wrote {book}?",
            "{book} was written by whom?",
        ],
        translations=["Qui a écrit {book} ?", "Wer hat {book} geschrieben?", "¿Quién escribió {book}?"],
    ),
    Intent(
        {"lang": ("name", LANGS)},
        [
            "How do I reverse a list in {lang}?",
            "What's the best way to reverse a list in {lang}?",
            "In {lang}, how can I reverse a list?",
            "Show me how to reverse a list using {lang}.",
            "How would you reverse a list in {lang}?",
        ],
        negated=["How do I reverse a list in {lang} without changing the original?"],
        translations=["Comment inverser une liste en {lang} ?", "Wie kehre ich eine Liste in {lang} um?"],
    ),
    Intent(
        {"lang": ("name", LANGS)},
        [
            "How do I read a file line by line in {lang}?",
            "In {lang}, what's the way to read a file one line at a time?",
            "Can you show me how to read a file line by line with {lang}?",
            "What's the simplest way to read a file line by line in {lang}?",
        ],
    ),
    Intent(
        {"pet": ("topic", PETS)},
        [
            "Which foods are safe for {pet} to eat?",
            "What foods can {pet} safely eat?",
            "Could you list the foods that are safe for {pet}?",
            "What human food is safe to give {pet}?",
        ],
        negated=[
            "Which foods are not safe for {pet} to eat?",
            "What foods should {pet} never eat?",
            "What human food isn't safe to give {pet}?",
        ],
    ),
    Intent(
        {"city": ("name", CITIES)},
        [
            "Is it safe to drink tap water in {city}?",
            "Can I safely drink the tap water in {city}?",
            "Is {city}'s tap water safe to drink?",
            "Is the tap water in {city} safe for drinking?",
        ],
        negated=[
            "Why is it not safe to drink tap water in {city}?",
            "Why isn't {city}'s tap water safe to drink?",
        ],
        translations=["L'eau du robinet est-elle potable à {city} ?", "Kann man in {city} Leitungswasser trinken?"],
    ),
    Intent(
        {"drug": ("topic", DRUGS)},
        [
            "Should I take {drug} with food?",
            "Is it better to take {drug} with a meal?",
            "Do I need to take {drug} with food?",
            "Should {drug} be taken with food?",
        ],
        negated=[
            "Should I not take {drug} with food?",
            "Is it better not to take {drug} with a meal?",
            "Should {drug} never be taken with food?",
        ],
    ),
    Intent(
        {"city": ("name", CITIES), "city2": ("name", CITIES)},
        [
            "How long is the flight from {city} to {city2}?",
            "What's the flight time from {city} to {city2}?",
            "How many hours does it take to fly from {city} to {city2}?",
            "Flying from {city} to {city2}, how long does it take?",
            "How long does a flight from {city} to {city2} last?",
        ],
    ),
    Intent(
        {"month": ("date", MONTHS), "day": ("date", DAYS), "year": ("date", YEARS)},
        [
            "What day of the week was {month} {day}, {year}?",
            "Which weekday was {month} {day}, {year}?",
            "On what day of the week did {month} {day}, {year} fall?",
            "{month} {day}, {year}: what day of the week was that?",
            "Can you tell me the weekday of {month} {day}, {year}?",
        ],
    ),
    Intent(
        {"city": ("name", CITIES), "when": ("date", WHEN)},
        [
            "What events are happening in {city} {when}?",
            "What's on in {city} {when}?",
            "Are there any events in {city} {when}?",
            "Which events can I go to in {city} {when}?",
            "Could you list events taking place in {city} {when}?",
        ],
    ),
    Intent(
        {"company": ("name", COMPANIES), "month": ("date", MONTHS), "day": ("date", DAYS)},
        [
            "What was {company}'s stock price on {month} {day}?",
            "How much did {company} shares cost on {month} {day}?",
            "On {month} {day}, what was the share price of {company}?",
            "What did {company} stock close at on {month} {day}?",
        ],
    ),
    Intent(
        {"a": ("number", NUMBERS), "b": ("number", NUMBERS)},
        [
            "What is {a} times {b}?",
            "What's {a} multiplied by {b}?",
            "Can you multiply {a} by {b} for me?",
            "Calculate {a} times {b}, please.",
            "How much is {a} times {b}?",
        ],
    ),
    Intent(
        {"temp": ("number", TEMPS), "u": ("unit", ["degrees Celsius", "degrees Fahrenheit"])},
        [
            "How long should I bake a cake at {temp} {u}?",
            "At {temp} {u}, how long does a cake need to bake?",
            "What's the baking time for a cake at {temp} {u}?",
            "How many minutes should a cake bake at {temp} {u}?",
        ],
    ),
    Intent(
        {"language": ("name", LANGUAGES)},
        [
            "How do you say 'good morning' in {language}?",
            "What is 'good morning' in {language}?",
            "Translate 'good morning' into {language}.",
            "In {language}, how would I say 'good morning'?",
            "What's the {language} for 'good morning'?",
        ],
    ),
    Intent(
        {"n": ("number", NUMBERS), "country": ("name", COUNTRIES)},
        [
            "How many days of annual leave do employees get in {country} after {n} years?",
            "In {country}, how much annual leave do you get after {n} years of work?",
            "After {n} years on the job, how many vacation days are employees entitled to in {country}?",
            "What's the annual leave entitlement in {country} after {n} years?",
        ],
    ),
    Intent(
        {"country": ("name", COUNTRIES)},
        [
            "Do I need a visa to visit {country}?",
            "Is a visa required to travel to {country}?",
            "Will I need a visa for a trip to {country}?",
            "Does visiting {country} require a visa?",
        ],
        negated=["Why don't I need a visa to visit {country}?", "Which travellers do not need a visa for {country}?"],
        translations=["Ai-je besoin d'un visa pour visiter {country} ?", "¿Necesito visa para visitar {country}?"],
    ),
]


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _values(intent: Intent, rng: random.Random) -> dict[str, str]:
    values: dict[str, str] = {}
    for slot, (_, choices) in intent.slots.items():
        taken = set(values.values())
        values[slot] = rng.choice([c for c in choices if c not in taken])
    return values


Turn = tuple[str, str]  # (text, answer): turns with one answer id may share a cached answer, no others


def _turn(intent: Intent, template: str, values: dict[str, str], variant: str) -> Turn:
    answer = f"{INTENTS.index(intent)}/{variant}/" + ",".join(f"{k}={v}" for k, v in sorted(values.items()))
    return _fill(template, values), answer


def _near_miss(category: str, rng: random.Random) -> tuple[Turn, Turn] | None:
    intents = [i for i in INTENTS if category in {c for c, _ in i.slots.values()}]
    if category == "negation":
        intents = [i for i in INTENTS if i.negated]
    elif category == "language":
        intents = [i for i in INTENTS if i.translations]
    intent = rng.choice(intents)
    values = _values(intent, rng)
    a = rng.choice(intent.wordings)
    same_wording = rng.random() < 0.5
    if category == "negation":
        return _turn(intent, a, values, "yes"), _turn(intent, rng.choice(intent.negated), values, "no")
    if category == "language":
        t = rng.randrange(len(intent.translations))
        return _turn(intent, a, values, "yes"), _turn(intent, intent.translations[t], values, f"lang{t}")
    b = a if same_wording else rng.choice([w for w in intent.wordings if w != a])
    slot = rng.choice([s for s, (c, _) in intent.slots.items() if c == category])
    other = dict(values)
    other[slot] = rng.choice([c for c in intent.slots[slot][1] if c not in values.values()])
    return _turn(intent, a, values, "yes"), _turn(intent, b, other, "yes")


def _paraphrase(rng: random.Random) -> tuple[Turn, Turn]:
    intent = rng.choice(INTENTS)
    values = _values(intent, rng)
    negated = bool(intent.negated) and len(intent.negated) > 1 and rng.random() < 0.2
    a, b = rng.sample(intent.negated if negated else intent.wordings, 2)
    variant = "no" if negated else "yes"
    return _turn(intent, a, values, variant), _turn(intent, b, values, variant)


def pairs(seed: int = SEED) -> Iterator[dict[str, str]]:
    """Near misses (PER_CATEGORY of each category) then paraphrases, each pair once, the same on every run. Each
    turn comes with its answer id (`a_answer`, `b_answer`): two turns may share an answer only when their ids are
    equal (the same intent, values, polarity and language)."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    for category in CATEGORIES:
        made = 0
        while made < PER_CATEGORY:
            pair = _near_miss(category, rng)
            if pair is None or (pair[0][0], pair[1][0]) in seen or pair[0][0] == pair[1][0]:
                continue
            seen.add((pair[0][0], pair[1][0]))
            made += 1
            (a, a_answer), (b, b_answer) = pair
            yield {
                "kind": "near-miss",
                "category": category,
                "a": a,
                "b": b,
                "a_answer": a_answer,
                "b_answer": b_answer,
            }
    made = 0
    while made < PARAPHRASES:
        (a, a_answer), (b, b_answer) = _paraphrase(rng)
        if (a, b) in seen or a.lower() == b.lower():
            continue
        seen.add((a, b))
        made += 1
        yield {
            "kind": "paraphrase",
            "category": "paraphrase",
            "a": a,
            "b": b,
            "a_answer": a_answer,
            "b_answer": b_answer,
        }


if __name__ == "__main__":
    for item in pairs():
        sys.stdout.buffer.write(orjson.dumps(item) + b"\n")
