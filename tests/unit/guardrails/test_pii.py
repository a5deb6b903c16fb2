"""The PII detector: recall and precision per type on a generated labelled corpus, and each detector's edges."""

from __future__ import annotations

import pytest

from gateway.guardrails.pii import PII_TYPES, PiiDetector, iban_ok, luhn_ok
from tests.unit.guardrails.pii_corpus import Corpus


def test_recall_and_precision_per_type_on_the_labelled_corpus() -> None:
    detector = PiiDetector()
    samples = Corpus(seed=7, per_type=150).samples()
    stats = {kind: {"tp": 0, "fn": 0, "fp": 0} for kind in PII_TYPES}
    misses: dict[str, list[str]] = {kind: [] for kind in PII_TYPES}
    for sample in samples:
        findings = detector.detect(sample.text)
        for kind, start, end in sample.spans:
            if any(f.type == kind and f.start < end and start < f.end for f in findings):
                stats[kind]["tp"] += 1
            else:
                stats[kind]["fn"] += 1
                misses[kind].append(sample.text)
        for finding in findings:
            if not any(k == finding.type and finding.start < e and s < finding.end for k, s, e in sample.spans):
                stats[finding.type]["fp"] += 1
                misses[finding.type].append(f"FP {sample.text[finding.start : finding.end]!r} in {sample.text!r}")
    lines = [f"{'type':<12} {'recall':>7} {'precision':>9}   tp  fn  fp"]
    failed = []
    for kind, s in stats.items():
        recall = s["tp"] / max(1, s["tp"] + s["fn"])
        precision = s["tp"] / max(1, s["tp"] + s["fp"])
        lines.append(f"{kind:<12} {recall:>7.3f} {precision:>9.3f} {s['tp']:>4} {s['fn']:>3} {s['fp']:>3}")
        if recall < 0.98 or precision < 0.95:
            failed.append(f"{kind}: {misses[kind][:5]}")
    table = "\n".join(lines)
    print("\n" + table)
    assert not failed, table + "\n" + "\n".join(failed)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+x@mail.example.org today", "email"),
        ("+1 415 555 2671", "phone"),
        ("(415) 555-2671", "phone"),
        ("06 12 34 56 78", "phone"),
        ("4111-1111-1111-1111", "card"),
        ("3782 822463 10005", "card"),
        ("GB82 WEST 1234 5698 7654 32", "iban"),
        ("NL91ABNA0417164300", "iban"),
        ("123-45-6789", "national_id"),
        ("X1234567L", "national_id"),
        ("RSSMRA85T10A562S", "national_id"),
        ("BSN: 111222333", "national_id"),
        ("811218-9876", "national_id"),
        ("192.168.10.254", "ip"),
        ("2001:db8::8a2e:370:7334", "ip"),
        ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx1234", "secret"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "secret"),
        ('api_key: "Zx81kQ2mWq"', "secret"),
    ],
)
def test_each_type_is_found(text: str, kind: str) -> None:
    findings = PiiDetector().detect(text)
    assert [f.type for f in findings] == [kind], findings


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "GB83 WEST 1234 5698 7654 32",  # mod-97 fails
        "released on 2024-03-15 at 10:20:30",
        "upgrade to 1.2.3 or v10.4.22",
        "ISBN 978-3-16-148410-0",
        "id 123e4567-e89b-12d3-a456-426614174000, commit 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        "order 123456789012 costs $1,234.56",
        "999.1.1.1 is not an address",
        "666-12-3456 and 000-12-3456 were never issued",
        "12345678A has the wrong letter",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa and ThisIsJustAVeryLongCamelCaseIdentifierName",
        "xs[::2], xs[1::3], std::vector<int>, fe80::1 and ::1, at 12:30:45, mac 00:1a:2b:3c:4d:5e",
        "@app.route('/x') and @decorator and user@ and @ alone",
        "def handler(event):\n    return compute_totals(event['items'], tax_rate=0.21)",
    ],
)
def test_look_alikes_are_not_found(text: str) -> None:
    assert PiiDetector().detect(text) == []


def test_redaction_uses_typed_placeholders_and_keeps_the_rest() -> None:
    detector = PiiDetector()
    text = "Mail bob@example.com or call +44 20 7946 0958 about card 4111111111111111."
    assert detector.redact(text) == "Mail [EMAIL] or call [PHONE] about card [CARD]."
    result = detector.check(text)
    assert result.triggered
    assert result.message == "found card, email, phone"
    dicts = [f.to_dict() for f in result.findings]
    assert dicts[0] == {"type": "email", "start": 5, "end": 20}
    assert all("bob" not in str(d) for d in dicts)


def test_types_limit_what_is_looked_for() -> None:
    detector = PiiDetector(["email"])
    assert [f.type for f in detector.detect("bob@example.com 4111111111111111")] == ["email"]
    with pytest.raises(ValueError, match="unknown pii types"):
        PiiDetector(["emails"])


def test_overlaps_keep_the_more_specific_type() -> None:
    # 16 digits in groups of four read as a phone too; the card wins, and only one finding remains
    findings = PiiDetector().detect("4111 1111 1111 1111")
    assert [(f.type, f.start, f.end) for f in findings] == [("card", 0, 19)]


def test_checksums() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("DE88370400440532013000")


def test_offsets_are_exact_for_every_type() -> None:
    values = {
        "email": "a.b@example.org",
        "phone": "(415) 555-2671",
        "card": "5555 5555 5555 4444",
        "iban": "DE89 3704 0044 0532 0130 00",
        "national_id": "RSSMRA85T10A562S",
        "ip": "2001:db8:85a3::8a2e:370:7334",
        "secret": "ghp_" + "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
    }
    text = "Start. " + ", then ".join(f"{kind} is {value}" for kind, value in values.items()) + ". End."
    findings = PiiDetector().detect(text)
    assert [(f.type, text[f.start : f.end]) for f in findings] == list(values.items())
    assert PiiDetector().redact(text).count("[") == len(values)


def test_adjacent_addresses_and_sentence_ends() -> None:
    text = "a@x.io,b@y.io; host 10.0.0.1. Next 2001:db8::7:1."
    findings = PiiDetector().detect(text)
    assert [text[f.start : f.end] for f in findings] == ["a@x.io", "b@y.io", "10.0.0.1", "2001:db8::7:1"]
