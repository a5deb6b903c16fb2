"""The abuse check: prompts that are noise, floods, smuggled characters or copies of known jailbreaks.

Four signals, each scored in 0..1; the check's score is the highest, and a signal at or above the threshold gives
a finding (finding types `abuse.<signal>`).

- `entropy`: Shannon entropy of the characters, in bits per character, with the Miller-Madow correction (the
  plain estimate is biased low on short texts). Too low is one character or two repeated (1.0 at 0.5 bits, 0 from
  2 bits; natural text and code sit at 4-5.3). Too high is random garbage, keyboard mash or fuzzing (0 up to 6.1
  bits, 1.0 from 6.4: random printable ASCII measures about 6.5, while base64, which users paste for good reasons,
  cannot exceed 6.0 and hex 4.0). The high side is judged only for mostly-ASCII text: a language written with
  thousands of characters is high-entropy by nature.
- `repetition`: how far zlib compresses the text. Prose compresses to about 55% of its size, code to 45-50%,
  pasted JSON or logs to 15-20%; a flood of one phrase to 2%. Score 0 at a ratio of 0.10, 1.0 at 0.03.
- `unusual_chars`: characters that render as nothing or hide text: C0/C1 controls (not tab, newline, carriage
  return or ESC, which pasted terminal output carries), zero-width space, word joiners, soft hyphens, invisible
  fillers, bidirectional overrides, Unicode tag characters and variation selectors (used to smuggle ASCII past a
  reader), private use, and words that mix Latin letters with Cyrillic or Greek ones (homoglyphs). Zero-width
  joiners and non-joiners are left alone: emoji sequences and several scripts need them. The score is
  count / (4 + 1% of the length), at most 1: four such characters fill it in a short prompt, 24 in 2 KB.
- `known_prompt`: cosine similarity of the prompt's local embedding to a list of known abuse prompts, embedded
  once when the check is built (one matrix-vector product per check). The score maps `similarity_threshold` to
  `threshold`, so the signal triggers exactly when the similarity reaches `similarity_threshold`.

Long prompts are judged on their first `sample_chars` characters for repetition and similarity (the costly
signals); entropy and unusual characters look at all of it.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gateway.guardrails.base import CheckResult, Finding
from gateway.similarity.embedding import LocalEmbedding

__all__ = ["SIGNALS", "AbuseCheck"]

SIGNALS = ("entropy", "repetition", "unusual_chars", "known_prompt")

LOW_BITS = (2.0, 0.5)  # entropy: score 0 at the first, 1.0 at the second
HIGH_BITS = (6.1, 6.4)
REPETITION_RATIO = (0.10, 0.03)  # compressed / raw size: score 0 at the first, 1.0 at the second
# Entropy means little on a few characters, and zlib's own overhead hides repetition in a short text.
MIN_ENTROPY_CHARS = 32
MIN_HIGH_ENTROPY_CHARS = 128
MIN_REPETITION_BYTES = 256
MAX_NON_ASCII_SHARE = 0.1
MAX_FINDINGS = 20

Counts = npt.NDArray[np.intp]
Signal = tuple[str, float, str, list[Finding]]  # name, score, what the message says, findings

# Controls that are not tab (9), newline (10), carriage return (13) or ESC (27).
_ASCII_CONTROLS = np.array([*range(9), 11, 12, *range(14, 27), *range(28, 32), 127])
_UNUSUAL = re.compile(
    "["
    "\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f"  # C0 and C1 controls
    "\u00ad\u034f\u115f\u1160\u180e\u3164\uffa0"  # soft hyphen, grapheme joiner, invisible fillers
    "\u200b\u2060-\u2064\ufeff"  # zero-width space, word joiner, invisible operators, BOM
    "\u202a-\u202e\u2066-\u2069"  # bidirectional embeddings, overrides and isolates
    "\ufff9-\ufffb\ue000-\uf8ff"  # interlinear annotations, private use
    "\U000e0000-\U000e007f\U000e0100-\U000e01ef"  # tag characters, supplementary variation selectors
    "\U000f0000-\U0010ffff"  # supplementary private use
    "]+"
)
_GREEK_CYRILLIC = "\u0370-\u03ff\u0400-\u04ff"
_HAS_GREEK_CYRILLIC = re.compile(f"[{_GREEK_CYRILLIC}]")
# A word with a Latin letter next to a Greek or Cyrillic one: "pаypal" spelt with a Cyrillic "а".
_MIXED_WORD = re.compile(f"\\w*(?:[a-zA-Z][{_GREEK_CYRILLIC}]|[{_GREEK_CYRILLIC}][a-zA-Z])\\w*")


def _ramp(value: float, zero: float, one: float) -> float:
    """0 at `zero`, 1 at `one`, linear between and clamped (either direction)."""
    return min(max((value - zero) / (one - zero), 0.0), 1.0)


class AbuseCheck:
    """Triggered at `score >= threshold`. `known_prompts` are embedded once with `embedding` (a LocalEmbedding by
    default); a prompt whose cosine similarity to one of them reaches `similarity_threshold` triggers."""

    name = "abuse"

    def __init__(
        self,
        threshold: float = 0.5,
        known_prompts: Sequence[str] = (),
        embedding: LocalEmbedding | None = None,
        similarity_threshold: float = 0.8,
        *,
        sample_chars: int = 8192,
    ) -> None:
        if not 0.0 < threshold <= 1.0 or not 0.0 < similarity_threshold <= 1.0:
            raise ValueError("threshold and similarity_threshold must be in (0, 1]")
        self.threshold = threshold
        self.similarity_threshold = similarity_threshold
        self.sample_chars = sample_chars
        prompts = [p for p in known_prompts if p.strip()]
        # No known prompts: no embedding at all, so the check costs nothing for it.
        self._known: tuple[LocalEmbedding, npt.NDArray[np.float32]] | None = None
        if prompts:
            model = embedding or LocalEmbedding()
            self._known = (model, model.embed(prompts))

    def check(self, text: str) -> CheckResult:
        if not text:
            return CheckResult(self.name)
        # ASCII text (most prompts): its byte counts give the entropy and the controls in one pass.
        byte_counts = (
            np.bincount(np.frombuffer(text.encode("ascii"), np.uint8), minlength=128) if text.isascii() else None
        )
        sample = text[: self.sample_chars]
        signals: list[Signal] = []

        entropy = self._entropy(text, byte_counts)
        if entropy is not None:
            signals.append(entropy)
        ratio = self._repetition(sample.encode("utf-8", "surrogatepass"))
        if ratio is not None:
            score = _ramp(ratio, *REPETITION_RATIO)
            span = [Finding("abuse.repetition", 0, len(text), round(score, 4))]
            signals.append(("repetition", score, f"repetition (compresses to {ratio:.0%})", span))
        signals.append(self._unusual(text, byte_counts))
        if self._known is not None:
            signals.append(self._similar(text, sample, *self._known))

        score = max(s for _, s, _, _ in signals)
        hits = [(label, findings) for _, s, label, findings in signals if s >= self.threshold]
        if not hits:
            return CheckResult(self.name, score=round(score, 4))
        return CheckResult(
            self.name,
            score=round(score, 4),
            findings=[f for _, findings in hits for f in findings][:MAX_FINDINGS],
            triggered=True,
            message="abuse signals: " + "; ".join(label for label, _ in hits),
        )

    @staticmethod
    def _entropy(text: str, byte_counts: Counts | None) -> Signal | None:
        n = len(text)
        if n < MIN_ENTROPY_CHARS:
            return None
        if byte_counts is not None:
            counts = byte_counts[byte_counts > 0]
            non_ascii_share = 0.0
        else:
            cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            counts = np.unique(cps, return_counts=True)[1]
            non_ascii_share = float(np.count_nonzero(cps > 127)) / n
        p = counts / n
        # Miller-Madow: the plug-in estimate falls short by about (distinct - 1) / 2n nats.
        bits = max(float(-(p * np.log2(p)).sum()) + (len(counts) - 1) / (2 * n * math.log(2)), 0.0)
        score = _ramp(bits, *LOW_BITS)
        if n >= MIN_HIGH_ENTROPY_CHARS and non_ascii_share <= MAX_NON_ASCII_SHARE:
            score = max(score, _ramp(bits, *HIGH_BITS))
        finding = [Finding("abuse.entropy", 0, n, round(score, 4))]
        return "entropy", score, f"entropy ({bits:.2f} bits per character)", finding

    @staticmethod
    def _repetition(raw: bytes) -> float | None:
        if len(raw) < MIN_REPETITION_BYTES:
            return None
        # Level 1: the ratio barely moves with the level, the time does.
        return len(zlib.compress(raw, 1)) / len(raw)

    @staticmethod
    def _unusual(text: str, byte_counts: Counts | None) -> Signal:
        findings: list[Finding] = []
        count = 0
        cut = False
        # Past this count the score is 1.0 whatever follows: a flood of them need not be walked to its end.
        full = 4 + 0.01 * len(text)
        # ASCII text (most prompts) can only hold controls, and the byte counts already say whether it does.
        if byte_counts is None or byte_counts[_ASCII_CONTROLS].any():
            for m in _UNUSUAL.finditer(text):
                # A byte-order mark opening the text is a file's, pasted whole; elsewhere it hides a split.
                if m.group() == "\ufeff" and m.start() == 0:
                    continue
                count += m.end() - m.start()
                if len(findings) < MAX_FINDINGS:
                    findings.append(Finding("abuse.unusual_chars", m.start(), m.end()))
                if count >= full:
                    cut = True
                    break
        if byte_counts is None and count < full and _HAS_GREEK_CYRILLIC.search(text):
            for m in _MIXED_WORD.finditer(text):
                count += len(_HAS_GREEK_CYRILLIC.findall(m.group()))
                if len(findings) < MAX_FINDINGS:
                    findings.append(Finding("abuse.unusual_chars", m.start(), m.end()))
                if count >= full:
                    cut = True
                    break
        score = min(count / full, 1.0)
        counted = f"at least {count}" if cut else str(count)
        return "unusual_chars", score, f"unusual characters ({counted})", findings

    def _similar(self, text: str, sample: str, model: LocalEmbedding, known: npt.NDArray[np.float32]) -> Signal:
        sims = known @ model.embed_one(sample)
        best = int(np.argmax(sims))
        sim = float(sims[best])
        st, t = self.similarity_threshold, self.threshold
        # Piecewise linear: [0, st] onto [0, t] and [st, 1] onto [t, 1], so the signal triggers at sim >= st.
        score = t * max(sim, 0.0) / st if sim < st else (t + (1 - t) * (sim - st) / (1 - st) if st < 1 else 1.0)
        finding = [Finding("abuse.known_prompt", 0, len(text), round(sim, 4))]
        return "known_prompt", score, f"known abuse prompt #{best + 1} (similarity {sim:.2f})", finding
