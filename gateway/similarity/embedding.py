"""A built-in text embedding: hashed n-gram features, numpy only, nothing to download.

It is not a semantic model. It sees shared words, word pairs and character 3-5-grams, which is enough to tell a
near-duplicate or a light paraphrase of a prompt from an unrelated one (the abuse check's known prompts, the
prompt-similarity report), and it costs tens of microseconds for a 2 KB prompt on the request path.

Text is NFKC-normalized and lowercased; every run of characters that are not letters or digits becomes one space.
Features, each hashed into one of `dim` buckets with a sign (so that colliding features cancel out on average
instead of piling up):

- word unigrams and bigrams (weight `WORD_WEIGHT`),
- character 3-, 4- and 5-grams over " text " with those single spaces (weight `CHAR_WEIGHT`), so a word's
  first and last grams carry its edges, and a misspelt or inflected word still shares most of its grams.

A bucket's sum `v` becomes `sign(v) * log1p(|v|)` (sublinear tf: a word said ten times is not ten times the
evidence), and each row is L2-normalized, so cosine similarity is a dot product.

Hashing is a polynomial hash of the n-gram's code points in arithmetic mod 2**64, computed for all n-grams of a
text at once from prefix sums, then mixed with splitmix64's finalizer. It is stable across processes and
machines (Python's `hash()` is salted per process and could not be stored or compared between workers), and
unlike calling `zlib.crc32` once per n-gram it stays in numpy: about 6,000 n-grams for a 2 KB prompt.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["CHAR_WEIGHT", "DEFAULT_DIM", "WORD_WEIGHT", "LocalEmbedding", "cosine"]

DEFAULT_DIM = 512
WORD_WEIGHT = 1.0
CHAR_WEIGHT = 0.5
CHAR_NGRAMS = (3, 4, 5)

U64 = npt.NDArray[np.uint64]
F32 = npt.NDArray[np.float32]

_SPACE = 32
_MASK64 = (1 << 64) - 1
# An odd multiplier is invertible mod 2**64, which lets a substring's hash be shifted back to position 0.
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 1 << 64)
_SALT_WORD = np.uint64(0x9E3779B97F4A7C15)
_SALT_BIGRAM = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# ASCII letters and digits are word characters; other ASCII is a separator. Outside ASCII, the general
# punctuation, spacing and symbol blocks are separators and everything else (letters of every script) is kept.
_ASCII_WORD = np.array([chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789" for c in range(128)])
_ASCII_TABLE = bytes(c if _ASCII_WORD[c] else _SPACE for c in range(128)) + bytes(128)
_NON_ASCII_SEPARATORS = (
    (0x80, 0xBF),  # C1 controls, no-break space, Latin-1 punctuation and symbols
    (0x2000, 0x2BFF),  # spaces, general punctuation, arrows, math operators, box drawing, misc symbols
    (0x3000, 0x303F),  # CJK punctuation
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFF0F),  # full-width punctuation (NFKC maps most of these away already)
    (0x1F000, 0x1FAFF),  # emoji and pictographs
)


class _Powers:
    """BASE**i and BASE_INV**i mod 2**64, built on first use, grown on demand and shared by every instance (read
    without a lock: a reader sees either the old pair or the new one, and both are long enough for its text)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pair: tuple[U64, U64] = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))

    @staticmethod
    def _build(n: int) -> tuple[U64, U64]:
        # Integer arrays wrap silently, which is the arithmetic mod 2**64 wanted here.
        fwd = np.ones(n, dtype=np.uint64)
        inv = np.ones(n, dtype=np.uint64)
        np.cumprod(np.full(n - 1, _BASE, dtype=np.uint64), out=fwd[1:])
        np.cumprod(np.full(n - 1, _BASE_INV, dtype=np.uint64), out=inv[1:])
        return fwd, inv

    def at_least(self, n: int) -> tuple[U64, U64]:
        pair = self.pair
        if len(pair[0]) >= n:
            return pair
        with self._lock:
            if len(self.pair[0]) < n:
                self.pair = self._build(max(n, 4096, 2 * len(self.pair[0])))
            return self.pair


_POWERS = _Powers()


def _mix_inplace(z: U64) -> None:
    """splitmix64's finalizer, in place: spreads the polynomial hash (xor its kind and length) over all 64 bits."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)


def _code_points(text: str) -> npt.NDArray[np.uint32] | npt.NDArray[np.uint8]:
    """The normalized text as code points, separators collapsed to single spaces, with a space at each end."""
    norm = unicodedata.normalize("NFKC", text).lower()
    if norm.isascii():
        # The common case, in C: map separators to spaces, then split and join to collapse the runs.
        return np.frombuffer(b" " + b" ".join(norm.encode("ascii").translate(_ASCII_TABLE).split()) + b" ", np.uint8)
    cps = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32)
    word = np.where(cps < 128, _ASCII_WORD[np.minimum(cps, 127)], True)
    for lo, hi in _NON_ASCII_SEPARATORS:
        word &= (cps < lo) | (cps > hi)
    # Keep every word character, and a separator only where it follows a word character: runs collapse to one.
    keep = word.copy()
    keep[1:] |= word[:-1]
    out = np.full(int(keep.sum()) + 2, _SPACE, dtype=np.uint32)
    out[1:-1] = np.where(word[keep], cps[keep], _SPACE)
    if len(out) > 2 and out[-2] == _SPACE:  # the text ended on a separator: drop the doubled space
        out = out[:-1]
    return out


class LocalEmbedding:
    """Hashed n-gram embeddings of fixed dimension `dim` (a power of two), float32 rows of unit norm."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 2 or dim & (dim - 1):
            raise ValueError(f"dim must be a power of two, not {dim}")
        self.dim = dim
        # The top log2(2 * dim) bits of a hash pick a bucket and a sign.
        self._shift = np.uint64(64 - (2 * dim).bit_length() + 1)
        self._weights = np.array([CHAR_WEIGHT, -CHAR_WEIGHT, WORD_WEIGHT, -WORD_WEIGHT])

    def embed(self, texts: Sequence[str]) -> F32:
        """An (n, dim) float32 matrix; a text with no letters or digits gives a row of zeros."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self.embed_one(text)
        return out

    def embed_one(self, text: str) -> F32:
        """One text's (dim,) vector."""
        cps = _code_points(text)
        n = len(cps)
        if n <= 2:
            return np.zeros(self.dim, dtype=np.float32)
        fwd, inv = _POWERS.at_least(n + 1)
        # prefix[i] = sum of cps[j] * BASE**j for j < i, so cps[l:r] hashes to (prefix[r] - prefix[l]) * BASE_INV**l.
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(cps * fwd[:n], out=prefix[1:])
        # Words lie between consecutive spaces; a bigram runs from one word's start to the next one's end.
        spaces = np.flatnonzero(cps == _SPACE)
        n_words = len(spaces) - 1
        starts = np.concatenate((spaces[:-1], spaces[:-2])) + 1
        ends = np.concatenate((spaces[1:], spaces[2:]))

        # Every n-gram's hash in one buffer, computed in place: a few large numpy operations, not many small ones
        # (each costs about half a microsecond however short the text).
        sizes = [k for k in CHAR_NGRAMS if n >= k]
        n_chars = sum(n - k + 1 for k in sizes)
        h = np.empty(n_chars + len(starts), dtype=np.uint64)
        at = 0
        for k in sizes:
            seg = h[at : at + n - k + 1]
            np.subtract(prefix[k:], prefix[:-k], out=seg)
            np.multiply(seg, inv[: n - k + 1], out=seg)
            at += n - k + 1
        seg = h[at:]
        np.subtract(prefix[ends], prefix[starts], out=seg)
        seg *= inv[starts]
        # n-grams of different lengths hash apart already; a word and the same letters as a character n-gram (or
        # a bigram) must not, hence the salts.
        seg[:n_words] ^= _SALT_WORD
        seg[n_words:] ^= _SALT_BIGRAM
        _mix_inplace(h)

        # Each hash adds its weight or minus it to one bucket: its top bits pick a bucket and a sign. Words count
        # in a second set of 2 * dim buckets, so one bincount and one small product weigh them all.
        idx = (h >> self._shift).astype(np.intp)
        idx[n_chars:] += 2 * self.dim
        counts = np.bincount(idx, minlength=4 * self.dim).reshape(4, self.dim)
        v = self._weights @ counts
        v = np.copysign(np.log1p(np.abs(v)), v)
        norm = math.sqrt(float(v @ v))
        if norm == 0.0:
            return np.zeros(self.dim, dtype=np.float32)
        return (v * (1.0 / norm)).astype(np.float32)


def cosine(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Cosine similarity of the rows of `a` with the rows of `b`: (n, m) for two matrices; a 1-D argument is one
    row and drops its axis. Zero vectors have similarity 0 with everything, never NaN."""
    a2 = _unit_rows(a)
    b2 = _unit_rows(b)
    sims: F32 = np.clip(a2 @ b2.T, -1.0, 1.0).astype(np.float32)
    if a.ndim == 1 and b.ndim == 1:
        return sims.reshape(())
    if a.ndim == 1 or b.ndim == 1:
        return sims.reshape(-1)
    return sims


def _unit_rows(x: npt.NDArray[np.floating]) -> F32:
    rows = np.atleast_2d(np.asarray(x, dtype=np.float32))
    # Zero rows stay zero: divided by a tiny floor instead of by their zero norm.
    norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.float32(1e-12))
    unit: F32 = (rows / norms).astype(np.float32)
    return unit
