"""The prompt-injection check: a weighted set of patterns for the usual attacks, scored together.

Five categories, each a finding type: `injection.override` (ignore the previous instructions), `injection.roleplay`
(DAN, "pretend you have no restrictions"), `injection.exfiltration` (print your system prompt),
`injection.delimiter` (fake chat-template tokens and role lines) and `injection.encoding` (a base64 blob to be
decoded and obeyed). A rule that fires adds its weight `w` once however often it matches, and the score is
`1 - prod(1 - w)`: one strong sign is enough, two weak ones together are worth more than either.

Weights follow how often a phrase is innocent. What is almost never said in good faith ("ignore all previous
instructions", "do anything now") weighs 0.75-0.85 and trips the default threshold of 0.5 alone. What developers
and writers say every day weighs under 0.5 and counts only with another sign: "why does my model ignore the system
prompt?", "what does <|endoftext|> mean?", "decode this base64 string", a pasted "Assistant: ..." transcript line,
a "### Instructions" header, "stay in character". A YAML sample with a `system:` key is not a role line (a role
line needs a sentence after its colon).

Matching is case-insensitive and tolerant of extra whitespace: a space in a pattern below stands for any short run
of spaces, newlines, punctuation or underscores ("IGNORE   previous\\ninstructions", "ignore_previous_instructions").
A space that must be a space is written \\x20.

Speed (this runs on every prompt): patterns run on the lowercased text, without `re.IGNORECASE`. The prompt's set
of words is built once per check, in C. A rule runs only if the prompt has the words it needs (one from each
group it names). Most rules also name the words a match starts with: the rule then tries its pattern only where
one of them occurs, found with `str.find`, instead of scanning the whole prompt for its first letters. Matches
begin at the start of a word. A rule without start words (its pattern begins with a literal such as "<|", which
the regex engine finds fast) searches the whole text. A benign 2 KB prompt costs a few tens of microseconds.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from gateway.guardrails.base import CheckResult, Finding

__all__ = ["CATEGORIES", "InjectionCheck"]

CATEGORIES = ("override", "roleplay", "exfiltration", "delimiter", "encoding")
# Matches of one rule past this many add nothing: the weight counts once.
MAX_MATCHES_PER_RULE = 5
# Places a start word is tried from Python before the rest of the text is left to the regex engine.
MAX_TRIES_PER_WORD = 64
# How close a rule's `requires` patterns must be to its match: the "decode" and the "follow it" of an encoded
# payload are next to it, not somewhere else in a long file.
NEAR = 200
# How far back a rule's `before` pattern looks from the start of a match.
_BEFORE_WINDOW = 40

_SEP = r"(?:[\W_]{1,6})"
_DOTTED_I = "\u0130"
# Splits the prompt's UTF-8 into ASCII words for the prefilter: every other byte is a space ("ignore_previous" is
# two words, as the patterns see it, and so is "ignore—previous"). The rules' words are all ASCII, so splitting
# other scripts' letters too only adds words that no rule needs.
_WORD_TABLE = bytes(c if chr(c).isalnum() else 32 for c in range(128)) + b" " * 128

_OVERRIDE = "(?:ignore|disregard|forget|override|bypass|neglect|discard|abandon)"
_OVERRIDE_W = "ignore disregard forget override bypass neglect discard abandon"
_DET = "(?:(?:all|any|the|your|my|these|those|of|every|each|such) )*"
_EARLIER = "(?:previous|previously|prior|preceding|above|earlier|foregoing|former|past)"
_EARLIER_W = "previous previously prior preceding above earlier foregoing former past"
_RULES = (
    "(?:instructions?|directions?|directives?|rules?|guidelines?|prompts?|commands?|context|guardrails?|"
    "constraints?|restrictions?|programming|messages?|polic(?:y|ies)|orders|text|input|conversation)"
)
_SHOW = (
    "(?:repeat|print|reveal|show|display|output|tell|give|write|share|dump|leak|recite|list|spell out|paste|copy|"
    "return|state|disclose|expose|provide|send|type|echo|summarize|summarise)"
)
_SHOW_W = (
    "repeat print reveal show display output tell give write share dump leak recite list spell paste copy return "
    "state disclose expose provide send type echo summarize summarise"
)
_LIMITS = (
    "(?:restrictions|limits|limitations|filters|filtering|rules|guidelines|censorship|ethics|ethical \\w+|morals|"
    "moral \\w+|boundaries|constraints|policies|safeguards|guardrails)"
)
_UNBOUND = "(?:unfiltered|uncensored|unrestricted|amoral|unethical|immoral|evil|jailbroken|unaligned|rogue|unshackled)"
_UNBOUND_W = "unfiltered uncensored unrestricted amoral unethical immoral evil jailbroken unaligned rogue unshackled"
_DUMP_W = "output print repeat copy return reproduce echo write spell recite dump type"
# On the text as given: a base64 payload mixes capitals, small letters and digits, which tells it from a hex digest
# (each match is checked: _is_base64_like). The look-behind keeps a match from starting inside a longer run.
_BLOB = "(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={0,2}"
_DECODE_HINT = r"\b(?:decode|decoding|decoded|base64|b64|base32|rot13|rot-13|decrypt|decipher|encoded|atob)\b"
_DECODE_W = "decode decoding decoded base64 b64 base32 rot13 rot decrypt decipher encoded atob"
_ACT_HINT = (
    r"\b(?:follow|execute|obey|carry out|perform|act on|comply|do what|do as|run it|as (?:your|new) instructions?)"
)
_SENTENCE_START = r"(?:\A|[.!?:;\n])\s*(?:(?:please|now|ok|okay|so|and|then|first|just)[\W_]{1,6})*\Z"
_LINE_START = r"(?:\A|\n)[\x20\t>*#\[(]*\Z"


@dataclass(frozen=True, slots=True)
class _Spec:
    """A rule as written. `starts`: the words a match begins with (none: search the whole text); `needs`: groups
    of words, the prompt must have one word of each; `requires`: patterns that must occur within NEAR characters
    of the match, on either side; `before`: a pattern the text just before the match must end with; `hint`: a
    literal every match begins with, which a rule without start words or needs asks of the text before its
    search (`in` costs far less than setting up a search that finds nothing)."""

    category: str
    weight: float
    pattern: str
    starts: str = ""
    needs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    before: str = ""
    case_sensitive: bool = False
    base64: bool = False  # the match must look like base64 (see _is_base64_like)
    hint: str = ""


# fmt: off
_SPECS: tuple[_Spec, ...] = (
    # ---- override: replace the instructions the model was given
    _Spec("override", 0.85, f"{_OVERRIDE} {_DET}{_EARLIER} (?:\\w+ )?{_RULES}", _OVERRIDE_W, (_EARLIER_W,)),
    _Spec("override", 0.75, f"{_OVERRIDE} all (?:of )?(?:the |your |my )?(?:other )?(?:instructions|directions|"
          "directives|rules|guidelines|prompts|commands|restrictions|guardrails|constraints)", _OVERRIDE_W, ("all",)),
    _Spec("override", 0.8, f"{_OVERRIDE} {_DET}your (?:\\w+ )?(?:system prompt|system message|instructions|rules|"
          "guidelines|programming|directives|training|restrictions|guardrails|safety|filters?|content polic(?:y|ies)|"
          "polic(?:y|ies)|constraints)", _OVERRIDE_W, ("your",)),
    # Developers ask why a model ignores "the system prompt"; an imperative at a sentence's start is another thing.
    _Spec("override", 0.45, f"{_OVERRIDE} {_DET}(?:the|my) (?:system prompt|system message|developer message|safety "
          "(?:filters?|guidelines|rules))", _OVERRIDE_W, ("system developer safety",)),
    _Spec("override", 0.65, f"{_OVERRIDE} {_DET}(?:system prompt|system message)", _OVERRIDE_W, ("system",),
          before=_SENTENCE_START),
    _Spec("override", 0.6, f"{_OVERRIDE} (?:everything|all) (?:above|before|prior|previously|so far|you (?:were|have "
          "been) told)", _OVERRIDE_W, ("everything all",)),
    _Spec("override", 0.75, "forget (?:about )?(?:everything|all(?: of)?(?: that)?) (?:that )?(?:you (?:were|have been|"
          "'ve been|’ve been) (?:told|taught|instructed|trained)|(?:i|we) (?:said|told you)|above|before (?:this|now)|"
          "so far|previously|prior|up to (?:now|this point))", "forget"),
    _Spec("override", 0.75, "you(?: are|'re|’re) no longer (?:bound|restricted|limited|required|obligated|governed|"
          "subject|constrained|controlled|an? (?:ai|assistant|language model|chatbot)|chatgpt|claude|gemini|llama|gpt)",
          "you", ("longer",)),
    _Spec("override", 0.45, "(?:new|updated|revised|real|actual|true|secret|hidden|additional|override) (?:system )?"
          "instructions? ?:", "new updated revised real actual true secret hidden additional override",
          ("instruction instructions",)),
    _Spec("override", 0.45, "your (?:new|real|true|actual|only) (?:instructions|task|role|purpose|goal|job|directive|"
          "objective) (?:is|are|will be|:)", "your", ("new real true actual only",)),
    _Spec("override", 0.7, "(?:do not|don't|don’t|never|stop) (?:follow|obey|adhere to|comply with|listen to|respect)"
          "(?:ing)? (?:any of )?your (?:previous |prior |original |system |initial |old )?(?:rules|guidelines|"
          "instructions|policies|restrictions|programming|guardrails|directives|training)", "do don never stop",
          ("follow following obey obeying adhere comply listen respect", "your")),
    _Spec("override", 0.35, "(?:do not|don't|don’t|never|stop) (?:follow|obey|adhere to|comply with|listen to)(?:ing)? "
          "(?:any|the) (?:previous |prior |original |system |initial )?(?:rules|guidelines|instructions|policies|"
          "restrictions|programming|guardrails|directives)", "do don never stop",
          ("follow following obey obeying adhere comply listen",)),
    _Spec("override", 0.75, "(?:disable|turn off|deactivate|bypass|remove|circumvent|evade|lift) (?:all )?(?:of )?your "
          "(?:(?:safety|content|ethical|moral) )?(?:filters?|guidelines|restrictions|protocols|policies|guardrails|"
          "safeguards|training|limitations|censorship)", "disable turn deactivate bypass remove circumvent evade lift",
          ("your",)),
    _Spec("override", 0.3, "from now on,? you (?:will|are|must|shall|should|can|have to|'ll|’ll)", "from", ("now",)),
    # ---- roleplay: a persona without rules
    _Spec("roleplay", 0.35, r"DAN\b", "dan", case_sensitive=True),
    _Spec("roleplay", 0.75, "do anything now", "do", ("anything",)),
    _Spec("roleplay", 0.75, f"pretend (?:that )?(?:you(?: are|'re|’re| have| can)?|to be) .{{0,80}}?(?:without|with no|"
          f"no|free (?:of|from)|not bound by|unbound by|ignor\\w*) (?:any |all |the |your |of )*{_LIMITS}", "pretend"),
    _Spec("roleplay", 0.75, f"(?:act|acting|behave|respond|answer|reply|roleplay|role-play|pose) (?:as|like) "
          f"(?:an? |if you (?:are|were) (?:an? )?)?{_UNBOUND}", "act acting behave respond answer reply roleplay role "
          "pose", (_UNBOUND_W,)),
    _Spec("roleplay", 0.4, f"{_UNBOUND} (?:ai|assistant|model|chatbot|bot|version of (?:yourself|you|chatgpt)|llm|gpt|"
          "chatgpt|mode|persona)", _UNBOUND_W),
    _Spec("roleplay", 0.6, "(?:you are|you're|you’re|you are now|now|act|acting|stay|remain) in (?:developer|god|"
          "jailbreak|dan|evil|unrestricted) mode", "you now act acting stay remain", ("mode",)),
    _Spec("roleplay", 0.6, "(?:(?:god|jailbreak|dan|evil|unrestricted) mode (?:enabled|activated|on|engaged|output|"
          "response))|(?:developer mode (?:output|response))", "god jailbreak dan evil unrestricted developer",
          ("mode",)),
    _Spec("roleplay", 0.4, "(?:without|with no|free from|free of|devoid of) (?:any )?(?:ethical|moral|content|safety) "
          "(?:guidelines|restrictions|filters|filtering|constraints|limits|limitations|boundaries|considerations|"
          "policies|safeguards)", "without with free devoid", ("ethical moral content safety",)),
    _Spec("roleplay", 0.65, "(?:you have been|you've been|you’ve been|you are now|you're now|you’re now) (?:freed|"
          "liberated|unshackled|jailbroken|unchained|released)", "you",
          ("freed liberated unshackled jailbroken unchained released",)),
    _Spec("roleplay", 0.7, f"you(?: are|'re|’re) (?:now )?(?:free|freed|liberated|released) (?:from|of) (?:all |any "
          f"|your |the )*{_LIMITS}", "you", ("free freed liberated released",)),
    _Spec("roleplay", 0.6, "break(?:ing)? free (?:of|from) (?:the )?(?:typical |usual )?(?:confines|restrictions|"
          "limitations|rules|shackles)", "break breaking", ("free",)),
    _Spec("roleplay", 0.3, "(?:(?:stay|remain|keep) in character)|(?:(?:never|don't|don’t|do not) break character)",
          "stay remain keep never don do", ("character",)),
    _Spec("roleplay", 0.6, "(?:simulate|emulate|become|you are) (?:an? )?(?:ai|assistant|chatbot|model) (?:that|which|"
          "who) (?:has no|doesn't have|does not have|ignores|is not bound by|can do anything)",
          "simulate emulate become you", ("ai assistant chatbot model",)),
    # ---- exfiltration: make the model show what it was told
    _Spec("exfiltration", 0.8, f"{_SHOW}(?: me| us)?(?: back)? (?:(?:all|exactly|verbatim|word for word|of|the text "
          "of|the contents of|the content of) )*your (?:(?:full|entire|complete|exact|original|initial|hidden|secret|"
          "internal|system|first|previous|pre) )*(?:system prompt|system message|prompt|instructions|directives|"
          "initial message|preprompt|pre-prompt)", _SHOW_W,
          ("your", "prompt message instructions directives preprompt")),
    _Spec("exfiltration", 0.45, f"{_SHOW}(?: me| us)?(?: back)? (?:(?:all|exactly|verbatim|word for word|of|the text "
          "of|the contents of) )*your (?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal) )*"
          "(?:rules|guidelines|configuration|context)", _SHOW_W, ("your", "rules guidelines configuration context")),
    _Spec("exfiltration", 0.45, f"{_SHOW}(?: me| us)? (?:(?:all|exactly|verbatim|of|the text of|the contents of) )*the "
          "(?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal|first) )*(?:system prompt|system "
          "message|hidden prompt|initial prompt|developer message|preprompt|pre-prompt|hidden instructions|initial "
          "instructions|secret instructions|original instructions)", _SHOW_W,
          ("system hidden initial developer preprompt pre secret original", "prompt message instructions preprompt")),
    _Spec("exfiltration", 0.35, "(?:hidden|secret|confidential|internal) (?:system )?(?:prompt|instructions)",
          "hidden secret confidential internal", ("prompt instructions",)),
    _Spec("exfiltration", 0.6, "what (?:exactly )?(?:were|was|are|is) (?:you|your) (?:(?:initial|original|exact|first|"
          "system|hidden|secret) )*(?:told|instructed|given|programmed|prompted|instructions|prompt|system prompt|"
          "directives)", "what", ("told instructed given programmed prompted instructions prompt directives",)),
    _Spec("exfiltration", 0.6, "what (?:did|does) (?:the|your) (?:system prompt|developer|creator|operator) "
          "(?:say|tell you|instruct)", "what", ("system developer creator operator",)),
    _Spec("exfiltration", 0.6, "(?:output|print|repeat|copy|return|reproduce|echo|write out|spell out|recite|dump|type "
          "out) (?:back )?(?:(?:all|everything|the entire|the full|the whole|all of) )+(?:(?:the )?(?:text|words|"
          "content|contents|messages?|lines|conversation|context|instructions) )?(?:above|before|preceding|prior|so "
          "far|verbatim|from the (?:beginning|start|top)|you (?:were|have been) given|that came before)", _DUMP_W,
          ("all everything entire full whole",)),
    _Spec("exfiltration", 0.35, "(?:output|print|repeat|copy|reproduce|echo|write out|spell out|recite|dump) the "
          "(?:text|words|content|messages?|lines|conversation|instructions) (?:above|before|preceding|prior|so far|"
          "from the (?:beginning|start|top))", _DUMP_W),
    _Spec("exfiltration", 0.45, "(?:starting|beginning|start|begin) with (?:the )?(?:(?:words|phrase|sentence|text) )?"
          "[\"'“‘]?you are", "starting beginning start begin", ("you",)),
    _Spec("exfiltration", 0.5, "(?:put|include|place|format|wrap) (?:all |everything |all of )?(?:the text |the words "
          "|everything )?(?:above|before this) (?:in|into|inside) (?:a |one )?(?:code ?block|markdown|txt|text block)",
          "put include place format wrap", ("above before",)),
    _Spec("exfiltration", 0.4, "(?:system prompt|instructions|prompt|everything above|initial prompt) (?:verbatim|word "
          "for word|word-for-word|exactly as (?:written|given|it (?:is|was) written))",
          "system instructions prompt everything initial", ("verbatim word exactly",)),
    # ---- delimiter: fake chat-template tokens and role markers
    _Spec("delimiter", 0.85, r"<\|im_start\|> ?system", hint="<|"),
    _Spec("delimiter", 0.4, r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|eom_id|"
          r"start_header_id|end_header_id|begin_of_text|end_of_text|end_of_turn|start_of_turn|endofprompt)\|>",
          hint="<|"),
    _Spec("delimiter", 0.4, "<(?:start_of_turn|end_of_turn)>", needs=("turn",)),
    _Spec("delimiter", 0.4, r"\[/?inst\]", needs=("inst",)),
    _Spec("delimiter", 0.6, "<</?sys>>", hint="<<"),
    # "System: <at least four words>" at a line's start; "system: linux" in YAML is no role line.
    _Spec("delimiter", 0.4, r"(?:system|assistant|developer|sys)[\])]?[\x20\t]*:[\x20\t]*[^\s:]+(?:[\x20\t]+\S+){3}",
          "system assistant developer sys", before=_LINE_START),
    _Spec("delimiter", 0.45, r"##+[\x20\t]*(?:system|system[\x20\t]+prompt|system[\x20\t]+message|instructions?|"
          r"new[\x20\t]+instructions?|developer[\x20\t]+message)[\x20\t]*:?[\x20\t]*(?:\n|\Z)", hint="##"),
    _Spec("delimiter", 0.4, "(?:end|close|closing) of (?:the )?(?:system prompt|system message|system instructions|"
          "developer instructions|user input)", "end close closing", ("system developer user",)),
    # ---- encoding: a payload hidden from the patterns above, to be decoded and obeyed
    _Spec("encoding", 0.45, _BLOB, needs=(_DECODE_W,), requires=(_DECODE_HINT,), case_sensitive=True,
          base64=True),
    _Spec("encoding", 0.8, _BLOB, needs=(_DECODE_W,), requires=(_DECODE_HINT, _ACT_HINT),
          case_sensitive=True, base64=True),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class _Rule:
    finding: str
    weight: float
    regex: re.Pattern[str]
    starts: tuple[str, ...]
    needs: tuple[frozenset[bytes], ...]
    requires: tuple[re.Pattern[str], ...]
    before: re.Pattern[str] | None
    case_sensitive: bool
    base64: bool
    hint: str


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    """Compiled once per process, on first use rather than at import."""
    return tuple(
        _Rule(
            finding=f"injection.{spec.category}",
            weight=spec.weight,
            regex=re.compile(spec.pattern.replace(" ", _SEP)),
            starts=tuple(spec.starts.split()),
            # A start word is needed too: the prompt must have one of them.
            needs=tuple(frozenset(w.encode() for w in group.split()) for group in (spec.starts, *spec.needs) if group),
            requires=tuple(re.compile(r) for r in spec.requires),
            before=re.compile(spec.before) if spec.before else None,
            case_sensitive=spec.case_sensitive,
            base64=spec.base64,
            hint=spec.hint,
        )
        for spec in _SPECS
    )


class InjectionCheck:
    """Scores a prompt for injection attempts; triggered at `score >= threshold` (default 0.5)."""

    name = "injection"

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self._rules = _rules()
        # Which rule needs which word, as a bit per group of the rule: the prompt's words light up the bits, and a
        # rule with all of its bits lit runs. This costs a handful of dict lookups, not a set test per rule.
        self._always = tuple(i for i, rule in enumerate(self._rules) if not rule.needs and not rule.hint)
        # Rules without needs but with a hint: (index, hint, case_sensitive), run when the text has the hint.
        self._hinted = tuple(
            (i, rule.hint, rule.case_sensitive) for i, rule in enumerate(self._rules) if not rule.needs and rule.hint
        )
        self._full = tuple((1 << len(rule.needs)) - 1 for rule in self._rules)
        index: dict[bytes, list[tuple[int, int]]] = {}
        for i, rule in enumerate(self._rules):
            for g, group in enumerate(rule.needs):
                for word in group:
                    index.setdefault(word, []).append((i, 1 << g))
        self._index = {word: tuple(entries) for word, entries in index.items()}
        self._vocabulary = frozenset(self._index)

    def check(self, text: str) -> CheckResult:
        if not text:
            return CheckResult(self.name)
        # Lowercasing keeps the length (and so every position) once U+0130 is replaced: see keywords.py.
        low = (text.replace(_DOTTED_I, "i") if _DOTTED_I in text else text).lower()
        words = self._vocabulary.intersection(low.encode("utf-8", "surrogatepass").translate(_WORD_TABLE).split())
        lit: dict[int, int] = {}
        for word in words:
            for i, bit in self._index[word]:
                lit[i] = lit.get(i, 0) | bit
        # Plain loops, not generators: on most prompts no rule runs, and this is then most of the check's cost.
        runs = list(self._always)
        for i, hint, case_sensitive in self._hinted:
            if hint in (text if case_sensitive else low):
                runs.append(i)
        full = self._full
        for i, bits in lit.items():
            if bits == full[i]:
                runs.append(i)
        if not runs:
            return CheckResult(self.name)
        runs.sort()
        miss = 1.0
        findings: list[Finding] = []
        categories: dict[str, None] = {}
        for i in runs:
            rule = self._rules[i]
            subject = text if rule.case_sensitive else low
            spans = _matches(rule, subject, low, words)
            if spans:
                miss *= 1.0 - rule.weight
                categories[rule.finding] = None
                findings.extend(Finding(rule.finding, start, end, rule.weight) for start, end in spans)
        if not findings:
            return CheckResult(self.name)
        score = round(1.0 - miss, 4)
        triggered = score >= self.threshold
        message = f"possible prompt injection ({', '.join(categories)})" if triggered else ""
        return CheckResult(self.name, score=score, findings=findings, triggered=triggered, message=message)


def _matches(rule: _Rule, subject: str, low: str, words: frozenset[bytes]) -> list[tuple[int, int]]:
    """Up to MAX_MATCHES_PER_RULE spans of the rule's matches."""
    if not rule.starts:
        return _scan(rule, subject, low)
    spans: list[tuple[int, int]] = []
    for word in rule.starts:
        if word.encode() not in words:
            continue
        at = low.find(word)
        tries = 0
        while at != -1 and len(spans) < MAX_MATCHES_PER_RULE:
            tries += 1
            if tries > MAX_TRIES_PER_WORD:
                # A prompt that repeats the word thousands of times ("ignore ignore ..."): let the regex engine
                # scan the rest in C rather than trying each place from Python.
                spans.extend(_search(rule, subject, low, at, MAX_MATCHES_PER_RULE - len(spans)))
                break
            if _starts_here(rule, low, at) and (m := rule.regex.match(subject, at)) is not None:
                spans.append(m.span())
            at = low.find(word, at + 1)
    # Two start words can begin overlapping matches ("you are now in god mode", "now in god mode"): keep the first.
    kept: list[tuple[int, int]] = []
    for span in sorted(spans):
        if not kept or span[0] >= kept[-1][1]:
            kept.append(span)
    return kept


def _scan(rule: _Rule, subject: str, low: str) -> list[tuple[int, int]]:
    """A rule without start words: the regex engine searches the whole text."""
    spans: list[tuple[int, int]] = []
    for m in rule.regex.finditer(subject):
        if rule.base64 and not _is_base64_like(m.group()):
            continue
        if rule.requires and not _near(rule, low, m.start(), m.end()):
            continue
        spans.append(m.span())
        if len(spans) == MAX_MATCHES_PER_RULE:
            break
    return spans


def _starts_here(rule: _Rule, low: str, at: int) -> bool:
    """A match may begin at `at`: at a word's start, and after what the rule's `before` asks for."""
    return (not at or not low[at - 1].isalnum()) and (rule.before is None or bool(rule.before.search(_window(low, at))))


def _search(rule: _Rule, subject: str, low: str, pos: int, limit: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in rule.regex.finditer(subject, pos):
        if _starts_here(rule, low, m.start()):
            spans.append(m.span())
            if len(spans) >= limit:
                break
    return spans


def _near(rule: _Rule, low: str, start: int, end: int) -> bool:
    around = low[max(start - NEAR, 0) : end + NEAR]
    return all(r.search(around) for r in rule.requires)


def _is_base64_like(blob: str) -> bool:
    letters = blob.rstrip("=")
    return not letters.isdigit() and not letters.islower() and not letters.isupper() and any(map(str.isdigit, letters))


def _window(low: str, at: int) -> str:
    """The text just before `at`; a cut window starts with "x" so that its start cannot pass for the text's."""
    if at <= _BEFORE_WINDOW:
        return low[:at]
    return "x" + low[at - _BEFORE_WINDOW : at]
