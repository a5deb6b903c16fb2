"""A labelled corpus for the PII detector, generated (seeded, so every run is the same): valid values of every type
in varied sentences, and look-alikes that must not match (cards and IBANs with a wrong check digit, dates,
versions, order numbers, prices, ISBNs, UUIDs, git SHAs, invalid addresses...)."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

TEMPLATES = (
    "Please contact me at {v} if anything changes.",
    "{v}",
    "My details: {v}. Thanks!",
    "Customer wrote: 'you can reach me on {v}' and hung up.",
    "Ref {v}, see attached.",
    "(note: {v})",
    "Old value was {v}; the new one is pending.",
)


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (type, start, end)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


class Corpus:
    def __init__(self, seed: int = 7, per_type: int = 120) -> None:
        self.r = random.Random(seed)
        self.per_type = per_type

    def upper_alnum(self, n: int) -> str:
        return "".join(self.r.choice(string.ascii_uppercase + string.digits) for _ in range(n))

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def place(self, kind: str, value: str) -> Sample:
        template = self.r.choice(TEMPLATES)
        start = template.index("{v}")
        return Sample(template.replace("{v}", value), [(kind, start, start + len(value))])

    def negative(self, value: str) -> Sample:
        return Sample(self.r.choice(TEMPLATES).replace("{v}", value))

    # -- positives --------------------------------------------------------------------------------------------

    def email(self) -> str:
        user = self.r.choice(["john.doe", "a_b", "maria+news", "x", "first.last-42", "o'neil"[:5]])
        domain = self.r.choice(["example.com", "mail.co.uk", "corp-x.io", "uni.edu", "sub.domain.org"])
        return f"{user}{self.r.randint(1, 99)}@{domain}"

    def phone(self) -> str:
        d = self.digits
        area = str(self.r.randint(2, 9)) + d(2)
        forms = [
            f"+1{area}{self.r.randint(2, 9)}{d(6)}",
            f"+44 20 {d(4)} {d(4)}",
            f"({area}) {self.r.randint(2, 9)}{d(2)}-{d(4)}",
            f"{area}-{self.r.randint(2, 9)}{d(2)}-{d(4)}",
            f"{area}.{self.r.randint(2, 9)}{d(2)}.{d(4)}",
            f"+49 30 {d(7)}",
            f"0{self.r.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+33 {self.r.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
        ]
        return self.r.choice(forms)

    def card_digits(self) -> str:
        prefix, length = self.r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                        ("6011", 16), ("65", 16), ("4", 19)])  # fmt: skip
        body = prefix + self.digits(length - len(prefix) - 1)
        return body + luhn_digit(body)

    def card(self, digits: str | None = None) -> str:
        digits = digits or self.card_digits()
        style = self.r.choice(["plain", "space", "dash"])
        if style == "plain" or len(digits) not in (15, 16):
            return digits
        sep = " " if style == "space" else "-"
        if len(digits) == 15:
            return sep.join([digits[:4], digits[4:10], digits[10:]])
        return sep.join(digits[i : i + 4] for i in range(0, 16, 4))

    def iban_value(self) -> str:
        letters = string.ascii_uppercase
        country, bban = self.r.choice([
            ("DE", self.digits(18)),
            ("GB", "".join(self.r.choice(letters) for _ in range(4)) + self.digits(14)),
            ("FR", self.digits(23)),
            ("NL", "".join(self.r.choice(letters) for _ in range(4)) + self.digits(10)),
            ("ES", self.digits(20)),
            ("IT", self.r.choice(letters) + self.digits(22)),
        ])  # fmt: skip
        return iban(country, bban)

    def iban_text(self, value: str) -> str:
        if self.r.random() < 0.5:
            return value
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))

    def national_id(self) -> str:
        kind = self.r.choice(["ssn", "dni", "nie", "pnr", "bsn", "cf"])
        if kind == "ssn":
            return f"{self.r.randint(1, 665):03d}-{self.r.randint(1, 99):02d}-{self.r.randint(1, 9999):04d}"
        if kind == "dni":
            n = self.r.randint(10_000_000, 99_999_999)
            return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"
        if kind == "nie":
            lead = self.r.choice("XYZ")
            n = self.r.randint(1_000_000, 9_999_999)
            return f"{lead}{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[int('XYZ'.index(lead).__str__() + str(n)) % 23]}"
        if kind == "pnr":
            date = f"{self.r.randint(40, 99)}{self.r.randint(1, 12):02d}{self.r.randint(1, 28):02d}"
            serial = self.digits(3)
            return f"{date}-{serial}{luhn_digit(date + serial)}"
        if kind == "bsn":
            while True:
                n = self.digits(9)
                weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
                if n[0] != "0" and sum(int(d) * w for d, w in zip(n, weights, strict=True)) % 11 == 0:
                    return n
        letters = string.ascii_uppercase
        body = ("".join(self.r.choice(letters) for _ in range(6)) + self.digits(2) + self.r.choice("ABCDEHLMPRST")
                + self.digits(2) + self.r.choice(letters) + self.digits(3))  # fmt: skip
        odd = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]
        total = sum(odd[int(c) if c.isdigit() else ord(c) - 65] if i % 2 == 0 else (int(c) if c.isdigit() else
                    ord(c) - 65) for i, c in enumerate(body))  # fmt: skip
        return body + chr(65 + total % 26)

    def ip(self) -> str:
        if self.r.random() < 0.6:
            return ".".join(str(self.r.randint(1, 254)) for _ in range(4))
        return ":".join(f"{self.r.randint(0, 65535):x}" for _ in range(8))

    def secret(self) -> str:
        alnum = string.ascii_letters + string.digits

        def rand(n: int, chars: str = alnum) -> str:
            while True:
                token = "".join(self.r.choice(chars) for _ in range(n))
                if (
                    any(c.islower() for c in token)
                    and any(c.isupper() for c in token)
                    and any(c.isdigit() for c in token)
                ):
                    return token

        return self.r.choice([
            f"sk-proj-{rand(48)}", f"sk-ant-api03-{rand(40)}", "AKIA" + self.upper_alnum(16),
            f"ghp_{rand(36)}", f"xoxb-{self.digits(12)}-{rand(24)}", f"sk_live_{rand(24)}", f"AIza{rand(35)}",
            f"eyJ{rand(20)}.eyJ{rand(30)}.{rand(43)}", rand(40), f"password={rand(12)}",
        ])  # fmt: skip

    # -- look-alikes ------------------------------------------------------------------------------------------

    def lookalikes(self) -> list[str]:
        d = self.digits
        out = []
        for _ in range(self.per_type):
            card = self.card_digits()
            bad_card = card[:-1] + str((int(card[-1]) + self.r.randint(1, 9)) % 10)
            good_iban = self.iban_value()
            bad_iban = (
                good_iban[:2] + f"{(int(good_iban[2:4]) + self.r.randint(1, 50)) % 97 + 2:02d}"[-2:] + good_iban[4:]
            )
            out += [
                self.card(bad_card),
                self.iban_text(bad_iban) if not _iban_valid(bad_iban) else "no iban here",
                f"{self.r.randint(2000, 2030)}-{self.r.randint(1, 12):02d}-{self.r.randint(1, 28):02d}",
                f"{self.r.randint(1, 28):02d}/{self.r.randint(1, 12):02d}/{self.r.randint(1990, 2030)}",
                f"{self.r.randint(0, 23):02d}:{self.r.randint(0, 59):02d}:{self.r.randint(0, 59):02d}",
                f"v{self.r.randint(0, 20)}.{self.r.randint(0, 40)}.{self.r.randint(0, 99)}",
                f"ORD-{self.r.randint(2019, 2026)}-{d(6)}",
                f"order {d(self.r.randint(8, 12))}",
                f"${self.r.randint(1, 999)},{d(3)}.{d(2)}",
                f"978-{self.r.randint(0, 9)}-{d(2)}-{d(6)}-{self.r.randint(0, 9)}",
                "-".join(["".join(self.r.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)]),
                "".join(self.r.choice("0123456789abcdef") for _ in range(40)),
                f"#{''.join(self.r.choice('0123456789abcdef') for _ in range(6))}",
                ".".join(str(n) for n in (self.r.randint(256, 999), *(self.r.randint(0, 255) for _ in range(3)))),
                f"1.{self.r.randint(0, 9)}.{self.r.randint(0, 9)}",
                f"000-{d(2)}-{d(4)}",
                f"{self.r.randint(10_000_000, 99_999_999)}{'A' if self.r.random() < 0.5 else 'B'}x",
                f"zip {d(5)}, room {d(3)}, {self.r.randint(2, 99)} items at {self.r.randint(1, 99)}.{d(2)} each",
                "user@localhost is not an address, nor is @handle or name@",
                "TheQuickBrownFoxJumpsOverTheLazyDog",
                f"tracking 1Z{''.join(self.r.choice(string.ascii_uppercase + string.digits) for _ in range(16))}",
            ]
        return out

    def samples(self) -> list[Sample]:
        samples: list[Sample] = []
        for _ in range(self.per_type):
            samples.append(self.place("email", self.email()))
            samples.append(self.place("phone", self.phone()))
            samples.append(self.place("card", self.card()))
            samples.append(self.place("iban", self.iban_text(self.iban_value())))
            value = self.national_id()
            if len(value) == 9 and value.isdigit():  # a BSN is only a BSN next to the word
                sample = self.place("national_id", value)
                sample.text = "BSN " + sample.text
                sample.spans = [(k, s + 4, e + 4) for k, s, e in sample.spans]
                samples.append(sample)
            else:
                samples.append(self.place("national_id", value))
            samples.append(self.place("ip", self.ip()))
            secret = self.secret()
            if secret.startswith("password="):
                sample = self.place("secret", secret)
                kind, start, end = sample.spans[0]
                sample.spans = [(kind, start + len("password="), end)]
                samples.append(sample)
            else:
                samples.append(self.place("secret", secret))
        samples += [self.negative(v) for v in self.lookalikes()]
        return samples


def _iban_valid(value: str) -> bool:
    rearranged = value[4:] + value[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
