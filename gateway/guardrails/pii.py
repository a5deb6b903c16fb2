"""Personal data and secrets in text: found by pattern, confirmed by checksum where one exists, redacted with
typed placeholders.

    email        local@domain.tld
    phone        +14155552671, +44 20 7946 0958, (415) 555-2671, 415-555-2671, 415.555.2671, 06 12 34 56 78:
                 7 to 15 digits, written with a leading + or with separators (a bare run of digits is an order
                 number as often as a phone); dates, versions, cards and addresses are not phones
    card         13 to 19 digits, spaces or dashes allowed, a known issuer prefix and a valid Luhn check digit
    iban         country code, check digits and account, the country's length, and mod-97 = 1
    national_id  ids with a check: Spanish DNI/NIE (check letter), Italian codice fiscale (check character),
                 Swedish personnummer (Luhn), Dutch BSN (11-proof, next to the word BSN); and US SSNs written
                 NNN-NN-NNNN outside the ranges never issued (no checksum exists for them)
    ip           IPv4 and IPv6 addresses, validated by the ipaddress module
    secret       known key formats (OpenAI, Anthropic, AWS, GitHub, Slack, Stripe, Google, JWTs, PEM private keys),
                 `password=...`-style assignments, and other long high-entropy tokens; UUIDs and hex digests
                 (git SHAs) are identifiers, not secrets

Findings never overlap: where two do, the one found by the more specific detector wins (a card over a phone, a
known key format over a generic token), then the longer.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections.abc import Callable, Iterable, Iterator

from gateway.guardrails.base import REDACTED, CheckResult, Finding, replace_spans

PII_TYPES = ("email", "phone", "card", "iban", "national_id", "ip", "secret")
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in PII_TYPES}


def placeholder(kind: str) -> str:
    """[EMAIL], [PHONE]... for personal data; [REDACTED] for anything else (a keyword)."""
    return PLACEHOLDERS.get(kind, REDACTED)


# Lower wins an overlap.
_RANK = {"secret": 0, "email": 1, "iban": 2, "card": 3, "national_id": 4, "ip": 5, "phone": 6}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])")  # fmt: skip
_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?!\w| \d)")
_PART_OF_CODE = re.compile(r"(?:^|\s)[A-Z0-9]{4} $")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,8}){1,5}(?![\w-]|\.\d)"
    r"|(?<![\w+])\+\d{7,15}(?!\w)"
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
# Every IPv6 address has two colons at most four hex digits apart; a literal ':' lets the engine skip ahead fast.
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_DNI = re.compile(r"(?<![A-Za-z0-9])(?:\d{8}|[XYZ]\d{7})-?[A-Z](?![A-Za-z0-9])")
_CODICE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{6}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z](?![A-Za-z0-9])")
_PERSONNUMMER = re.compile(r"(?<![\d-])(?:19|20)?(\d{6})[-+](\d{4})(?![\d-])")
_BSN = re.compile(r"(?i:\bbsn|burgerservicenummer)\b\D{0,48}?(?<!\d)(\d{9})(?!\d)")
_KNOWN_KEYS = re.compile(
    r"sk-ant-(?:api\d\d-)?[A-Za-z0-9_-]{20,}"
    r"|sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}"
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"
    r"|(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abprs]-[A-Za-z0-9-]{20,}"
    r"|(?:sk|rk|pk)_live_[A-Za-z0-9]{16,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
)
_PEM = re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----")
_ASSIGNMENT = re.compile(
    r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
    r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{6,})"
)
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{24,}(?![A-Za-z0-9+/_=-])")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_KEY_RUN = re.compile(r"[A-Za-z0-9+/_=.-]{20}")

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
# IBAN lengths of the countries most traffic names (SWIFT registry); others need 15 to 34 characters.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24,
    "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "IL": 23, "BR": 29, "QA": 29, "UA": 29,
}  # fmt: skip
_CODICE_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]

Span = tuple[int, int]


_NON_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_NUMERIC_RUN = re.compile(r"\d[\d .()/-]*\d")
_NUMERIC_KINDS = ("phone", "card", "iban", "national_id", "ip")
_ASSIGNMENT_HINTS = ("pass", "pwd", "secret", "key", "token")
# Any hint, in any case: str.lower() makes "pass" of nothing but cased "pass" (the hints are ASCII; the Kelvin sign
# lowers to "k", and re's IGNORECASE matches it to "k" as well).
_HINTS = re.compile("|".join(_ASSIGNMENT_HINTS), re.IGNORECASE)
_WINDOW_BEFORE = 12  # characters of context kept before a run of digits: an IBAN's letters, a "+" or a "("
# The fewest digits in one run for each digit-based detector to be worth running.
_MIN_DIGITS = {"phone": 7, "card": 13, "iban": 8, "national_id": 7, "ip": 4}
_WINDOW_AFTER = 12


class PiiDetector:
    """Built once from the types to look for; `check`, `detect` and `redact` are safe to call concurrently.

    Python's regex engine costs about 15 ns a character a pattern, so the detector never runs every pattern over
    the whole text: digit-based detectors run only in small windows around runs of digits, key formats only
    when a prefix of one occurs, generic tokens only among long words. Ordinary prose costs a few C-level scans.
    """

    name = "pii"

    def __init__(self, types: Iterable[str] = PII_TYPES, entropy_threshold: float = 3.6) -> None:
        wanted = set(types)
        unknown = wanted - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown pii types: {', '.join(sorted(unknown))}")
        self.types = tuple(t for t in PII_TYPES if t in wanted)
        self.entropy_threshold = entropy_threshold
        scanners: dict[str, Callable[[str], Iterator[Span]]] = {
            "phone": _phones,
            "card": _cards,
            "iban": _ibans,
            "national_id": _national_ids,
            "ip": _ipv4s,
        }
        self._numeric = [(kind, scanners[kind]) for kind in _NUMERIC_KINDS if kind in wanted]

    def detect(self, text: str) -> list[Finding]:
        found: set[tuple[str, int, int]] = set()
        types = self.types
        if "email" in types and "@" in text:
            found.update(("email", s, e) for s, e in _emails(text))
        if self._numeric and len(text.encode("utf-8", "surrogatepass").translate(None, _NON_DIGITS)) >= 4:
            for start, end, digits, dotted in _windows(text):
                window = text[start:end]
                for kind, scan in self._numeric:
                    if digits >= _MIN_DIGITS[kind] and (kind != "ip" or dotted):
                        found.update((kind, s + start, e + start) for s, e in scan(window))
        if "ip" in types and text.count(":") >= 2:
            found.update(("ip", s, e) for s, e in _ipv6s(text))
        # Codici fiscali, known key formats and high-entropy tokens are single long words: look among those only.
        long_words = _long_words(text, 16)
        if "national_id" in types:
            if long_words and _CODICE.search(" ".join(word for _, word in long_words)):
                for start, word in long_words:
                    found.update(("national_id", s + start, e + start) for s, e in _codici(word))
            lowered = text.lower()
            if "bsn" in lowered or "burgerservicenummer" in lowered:
                found.update(("national_id", s, e) for s, e in _bsns(text))
        # A secret is a PEM block, a long word, or an assignment whose name holds a hint: with none of them in the
        # text, the scan below would find nothing (one C search instead of its generator's setup and loop).
        if "secret" in types and (long_words or "-----BEGIN" in text or _HINTS.search(text) is not None):
            found.update(("secret", s, e) for s, e in self._secrets(text, long_words))
        if not found:
            return []
        return _resolve([Finding(kind, s, e) for kind, s, e in found])

    def check(self, text: str) -> CheckResult:
        findings = self.detect(text)
        if not findings:
            return CheckResult("pii")
        kinds = sorted({f.type for f in findings})
        return CheckResult(
            "pii",
            score=1.0 if findings else 0.0,
            findings=findings,
            triggered=bool(findings),
            message=f"found {', '.join(kinds)}" if kinds else "",
        )

    def redact(self, text: str, findings: list[Finding] | None = None) -> str:
        return replace_spans(text, self.detect(text) if findings is None else findings, placeholder)

    def _secrets(self, text: str, long_words: list[tuple[int, str]]) -> Iterator[Span]:
        spans: list[Span] = []
        if "-----BEGIN" in text:
            for match in _PEM.finditer(text):
                spans.append(match.span())
                yield match.span()
        # Every key format and generic token has a run of 20 key characters (a JWT counting its dots): one scan over
        # the long words rules ordinary code and prose out.
        if not long_words or not _KEY_RUN.search(" ".join(word for _, word in long_words)):
            long_words = []
        for start, word in long_words:
            if len(word) < 20:
                continue
            for match in _KNOWN_KEYS.finditer(word):
                spans.append((match.start() + start, match.end() + start))
                yield spans[-1]
            for match in _TOKEN.finditer(word):
                span = (match.start() + start, match.end() + start)
                if not _inside(span, spans) and _looks_secret(match.group(), self.entropy_threshold):
                    yield span
        lowered = text.lower()
        for hint in _ASSIGNMENT_HINTS:
            at = lowered.find(hint)
            while at >= 0:
                # the assignment's name ends within a few characters of the hint (api_key, client_secret)
                assignment = _ASSIGNMENT.search(text, max(0, at - 16), min(len(text), at + 120))
                if assignment is not None:
                    span = assignment.span(1)
                    if not _inside(span, spans):
                        spans.append(span)
                        yield span
                at = lowered.find(hint, at + len(hint))


_BUCKET_BITS = 6  # kept findings are indexed by the 64-character stretches of text they cover


def _resolve(found: list[Finding]) -> list[Finding]:
    """No two findings overlap: the more specific type wins, then the longer.

    A finding is compared only with the kept ones that cover the same stretches of text, not with every kept one:
    that was quadratic, and a prompt of 6,000 e-mail addresses and card numbers took 3 s (16 MB of them, hours)."""
    if len(found) < 2:
        return found
    found.sort(key=lambda f: (_RANK[f.type], f.start - f.end, f.start))
    kept: list[Finding] = []
    near: dict[int, list[Finding]] = {}
    for finding in found:
        start, end = finding.start, finding.end
        buckets = range(start >> _BUCKET_BITS, (max(start, end - 1) >> _BUCKET_BITS) + 1)
        if all(end <= k.start or start >= k.end for b in buckets for k in near.get(b, ())):
            kept.append(finding)
            for b in buckets:
                near.setdefault(b, []).append(finding)
    kept.sort(key=lambda f: f.start)
    return kept


def _windows(text: str) -> list[tuple[int, int, int, bool]]:
    """Stretches of text around runs of digits (merged where they overlap), where digit-based PII can be: (start,
    end, most digits in one run, whether a run has a dot)."""
    windows: list[tuple[int, int, int, bool]] = []
    for match in _NUMERIC_RUN.finditer(text):
        run = match.group()
        if len(run) < 7 or _DATE.fullmatch(run):
            continue  # shorter than the shortest IPv4 address (1.1.1.1) or phone; or a date, which is neither
        digits = sum(map(str.isdigit, run))
        dotted = run.count(".") >= 3
        if digits < 7 and not dotted:
            continue  # too few digits for anything but an IPv4 address, which has three dots
        start, end = max(0, match.start() - _WINDOW_BEFORE), min(len(text), match.end() + _WINDOW_AFTER)
        # never cut a word: lookbehinds and lookaheads must see what surrounds a match. The searches stop where the
        # window would anyway: searching the whole text for each run was quadratic in a text without newlines.
        low, high = max(0, start - 4 * _WINDOW_BEFORE), end + 4 * _WINDOW_AFTER
        space = max(text.rfind(" ", low, start), text.rfind("\n", low, start))
        start = max(space + 1, low)
        space = min((i for i in (text.find(" ", end, high), text.find("\n", end, high)) if i >= 0), default=high)
        end = min(space, high, len(text))
        if windows and start <= windows[-1][1]:
            last = windows[-1]
            windows[-1] = (last[0], max(end, last[1]), max(digits, last[2]), dotted or last[3])
        else:
            windows.append((start, end, digits, dotted))
    return windows


def _long_words(text: str, size: int) -> list[tuple[int, str]]:
    """(offset, word) of every whitespace-separated word of at least `size` characters."""
    out = []
    at = 0
    for word in [w for w in text.split() if len(w) >= size]:
        # the first occurrence after the last long word is this one: a shorter word cannot contain it
        at = text.find(word, at)
        out.append((at, word))
        at += len(word)
    return out


def _inside(span: Span, spans: list[Span]) -> bool:
    return any(s <= span[0] and span[1] <= e or span[0] < e and s < span[1] for s, e in spans)


def _looks_secret(token: str, threshold: float) -> bool:
    if _UUID.fullmatch(token) or _HEX.fullmatch(token):
        return False
    classes = (any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token))
    if sum(classes) < 3:
        return False
    return _entropy(token) >= threshold


def _entropy(text: str) -> float:
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _emails(text: str) -> Iterator[Span]:
    """The pattern is tried only where an address can start: back from each '@' over the local part's characters
    (running it over the whole text costs 20 ns a character)."""
    at = text.find("@")
    done = 0
    while at >= 0:
        start = at
        while start > done and at - start < 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        match = _EMAIL.match(text, start) if start < at else None
        if match is not None:
            yield match.span()
            done = match.end()
        at = text.find("@", max(at + 1, done))


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _issuer_ok(digits: str) -> bool:
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # Amex
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return 16 <= n <= 19  # Discover
    if 3528 <= four <= 3589:
        return 16 <= n <= 19  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # Diners
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    return digits.startswith(("50", "56", "57", "58", "6")) and 12 <= n <= 19  # Maestro


def _cards(text: str) -> Iterator[Span]:
    for match in _CARD.finditer(text):
        if _PART_OF_CODE.search(text[max(0, match.start() - 6) : match.start()]):
            continue  # the tail of a longer grouped code (an IBAN): GB95 PPTO 5078 8113 ...
        value = match.group()
        digits = _digits(value)
        if 13 <= len(digits) <= 19 and _grouped(value) and _issuer_ok(digits) and luhn_ok(digits):
            yield match.span()


def _grouped(value: str) -> bool:
    """Separators, if any, are one kind and group the number as issuers print it: 4-4-4-4(-3), 4-6-5, 4-6-4."""
    if value.isdigit():
        return True
    seps = {c for c in value if not c.isdigit()}
    sizes = [len(g) for g in re.split(r"[ -]", value)]
    return len(seps) == 1 and sizes[0] == 4 and all(s in (4, 6) for s in sizes[1:-1]) and 2 <= sizes[-1] <= 6


def _ibans(text: str) -> Iterator[Span]:
    for match in _IBAN.finditer(text):
        value = match.group()
        if " " in value and not _iban_groups(value):
            continue
        compact = value.replace(" ", "")
        expected = _IBAN_LENGTHS.get(compact[:2])
        if (expected is not None and len(compact) != expected) or not 15 <= len(compact) <= 34:
            continue
        if iban_ok(compact):
            yield match.span()


def _iban_groups(value: str) -> bool:
    groups = value.split(" ")
    return all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4


def iban_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _phones(text: str) -> Iterator[Span]:
    for match in _PHONE.finditer(text):
        value = match.group()
        digits = _digits(value)
        if not 7 <= len(digits) <= 15:
            continue
        if not value.startswith("+") and "(" not in value and not _phone_grouping(value):
            continue
        if _DATE.fullmatch(value) or _IPV4.fullmatch(value):
            continue
        yield match.span()


def _phone_grouping(value: str) -> bool:
    """Without a + or an area code in parentheses: one separator kind, and groups a numbering plan uses."""
    seps = {c for c in value if not c.isdigit()}
    if len(seps) != 1:
        return False
    groups = re.split(r"[ .-]", value)
    sizes = [len(g) for g in groups]
    if sizes in ([3, 3, 4], [3, 4], [3, 3, 3], [4, 3, 3], [3, 4, 4], [4, 4], [4, 7], [3, 7], [4, 6]):
        return True
    # 06 12 34 56 78, 030 12 34 56 78
    return len(groups) >= 4 and all(s == 2 for s in sizes[1:]) and sizes[0] in (2, 3) and sum(sizes) >= 9


def _ipv4s(text: str) -> Iterator[Span]:
    if "." in text:
        for match in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(match.group())
            except ValueError:
                continue
            yield match.span()


def _ipv6s(text: str) -> Iterator[Span]:
    """Around each pair of close colons, the whole run of address characters, if it is an address: with at least
    three groups or an IPv4 tail, so `::1`, `fe80::1` and Python slices (`a[1::2]`) are left alone."""
    end = 0
    for hint in _IPV6_HINT.finditer(text):
        if hint.start() < end:
            continue  # inside the run already judged
        start, end = hint.start(), hint.end()
        while start > 0 and text[start - 1] in _IPV6_CHARS:
            start -= 1
        while end < len(text) and text[end] in _IPV6_CHARS:
            end += 1
        value = text[start:end]
        stop = start + len(value.rstrip("."))  # a full stop ends the sentence, not the address
        value = text[start:stop]
        if (start > 0 and _is_word(text[start - 1])) or (end < len(text) and _is_word(text[end])):
            continue
        groups = [g for g in value.split(":") if g]
        if len(groups) < 3 and not (groups and "." in groups[-1]) or len(value) > 45:
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield start, stop


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _national_ids(text: str) -> Iterator[Span]:
    if "-" in text:
        for match in _SSN.finditer(text):
            yield match.span()
    for match in _DNI.finditer(text):
        value = match.group().replace("-", "")
        number = value[:-1].replace("X", "0").replace("Y", "1").replace("Z", "2")
        if _DNI_LETTERS[int(number) % 23] == value[-1]:
            yield match.span()
    for match in _PERSONNUMMER.finditer(text):
        date, serial = match.group(1), match.group(2)
        month, day = int(date[2:4]), int(date[4:6])
        if 1 <= month <= 12 and 1 <= (day - 60 if day > 60 else day) <= 31 and luhn_ok(date + serial):
            yield match.span()


def _bsns(text: str) -> Iterator[Span]:
    for match in _BSN.finditer(text):
        number = match.group(1)
        if sum(int(d) * w for d, w in zip(number, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True)) % 11 == 0:
            yield match.span(1)


def _codici(word: str) -> Iterator[Span]:
    for match in _CODICE.finditer(word):
        if _codice_ok(match.group()):
            yield match.span()


def _codice_ok(code: str) -> bool:
    total = 0
    for i, ch in enumerate(code[:15]):
        value = int(ch) if ch.isdigit() else ord(ch) - 65
        if i % 2 == 0:  # odd positions, 1-based
            total += _CODICE_ODD[value]
        else:
            total += value
    return chr(65 + total % 26) == code[15]
