"""The semantic cache's vectors in memory: per project, per scope, bounded, searched in well under a millisecond.

Rows are kept in buckets of the fields the veto compares for equality (veto.bucket_of: numbers, quantities, units,
dates, negations, script): a row of another bucket would be refused whatever its score, so a lookup searches only
its own bucket, and rows that differ by a ticket number never crowd out the one that matches.

A brute-force cosine over 100,000 rows of 512 floats reads 200 MB a lookup (tens of milliseconds). Instead each
row also has a 128-bit signature: the signs of its projections on 128 fixed random hyperplanes (SimHash), whose
Hamming distance to the query's estimates their angle (the chance that one bit differs is angle / pi). A lookup
XORs and counts the first 64 bits of every row of the bucket (0.8 MB for 100,000: ~60 µs in numpy), keeps the
PREFILTER nearest, ranks those again on all 128 bits and keeps RERANK (none farther than `min_score` allows, with
four standard deviations of slack), scores those exactly with their stored vectors and offers them to the veto
best first. The first one the veto lets through is the hit. A row the signatures leave out although its cosine is
above `min_score` is a miss, never a wrong answer.

Rows live in slots: signatures in one array per bucket (grown by doubling, cheap to copy), vectors in blocks of
`BLOCK` rows that never move (int8 and a scale a row: 512 bytes at 512 dimensions, and three times faster to
score than float16), keys, fingerprints and expiry times in lists beside them. A removed row leaves a free slot
for the next. Each project keeps its rows in least recently used order (a hit refreshes one) and drops the
oldest past `max_entries`; projects past `max_projects` go the same way, the least recently used first. Nothing
here awaits: this is the state a lookup reads.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.cache.veto import Bucket, Fingerprint, bucket_of, veto

__all__ = ["BITS", "Found", "Row", "VectorIndex", "quantize", "signatures"]

BITS = 128
WORDS = BITS // 64
BLOCK = 1024
RERANK = 32
PREFILTER = 4 * RERANK  # nearest by the first 64 bits, ranked again by all 128
# Candidates above min_score offered to the veto, at most: a scope of near-identical turns that differ by a number
# (ticket ids) would otherwise have the veto refuse all 64 on every lookup.
VETO_TRIES = 16
SEED = 0x5E3A471C  # the hyperplanes are the same in every process: signatures travel between replicas

F32 = npt.NDArray[np.float32]
U64 = npt.NDArray[np.uint64]

_planes_cache: dict[int, F32] = {}


def _planes(dim: int) -> F32:
    planes = _planes_cache.get(dim)
    if planes is None:
        planes = np.random.default_rng(SEED).standard_normal((dim, BITS)).astype(np.float32)
        _planes_cache[dim] = planes
    return planes


def signatures(vectors: F32) -> U64:
    """(n, WORDS) uint64: each row's SimHash, the sign bits of its projections on BITS fixed hyperplanes."""
    bits = (np.atleast_2d(vectors) @ _planes(vectors.shape[-1])) > 0
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64).reshape(-1, WORDS)


def quantize(vector: F32) -> tuple[npt.NDArray[np.int8], float]:
    """int8 components and the scale that gives them back (component ~ int8 * scale)."""
    peak = float(np.abs(vector).max()) if len(vector) else 0.0
    if peak == 0.0:
        return np.zeros(len(vector), dtype=np.int8), 0.0
    return np.rint(vector * (127 / peak)).astype(np.int8), peak / 127


def max_distance(min_score: float) -> int:
    """The largest Hamming distance at which a row's cosine may still reach `min_score` (four standard
    deviations above the distance that cosine gives on average)."""
    p = math.acos(max(-1.0, min(1.0, min_score))) / math.pi
    return min(BITS, math.ceil(BITS * p + 4 * math.sqrt(BITS * max(p * (1 - p), 1 / BITS))))


@dataclass(frozen=True, slots=True)
class Row:
    """One cached turn, as added locally or read from another replica."""

    project: str
    scope: str
    key: str
    vector: F32  # unit norm
    signature: U64  # (WORDS,)
    fingerprint: Fingerprint
    expires_at: float  # the clock's seconds (wall time: replicas share it)


class Found:
    """What a lookup found: the row served, its score, and how many candidates the veto refused on the way."""

    __slots__ = ("key", "score", "vetoed")

    def __init__(self, key: str | None, score: float, vetoed: list[str]) -> None:
        self.key = key
        self.score = score
        self.vetoed = vetoed


class _Bucket:
    """The rows of one scope whose turns have one veto key (veto.bucket): the only rows a lookup with that key
    could be served from. Starts with room for 4 rows and doubles, so that a bucket of one row stays small."""

    def __init__(self, scope: str, key: Bucket, dim: int) -> None:
        self.scope = scope
        self.key = key
        self.dim = dim
        self.high = 0  # slots ever used: the scan covers [0, high)
        self.sigs: list[U64] = [np.zeros(4, dtype=np.uint64) for _ in range(WORDS)]
        self.alive = np.zeros(4, dtype=bool)
        self.scales = np.zeros(4, dtype=np.float32)
        self.blocks: list[npt.NDArray[np.int8]] = []
        self.keys: list[str | None] = []
        self.fingerprints: list[Fingerprint | None] = []
        self.expires: list[float] = []
        self.free: list[int] = []
        # Scratch for the scan, reused: a lookup allocates no big array.
        self._xor = np.zeros(4, dtype=np.uint64)
        self._dist = np.zeros(4, dtype=np.uint8)

    def __len__(self) -> int:
        return self.high - len(self.free)

    def put(self, row: Row) -> int:
        if self.free:
            slot = self.free.pop()
        else:
            slot = self.high
            self.high += 1
            if slot >= len(self.alive):
                self._grow(2 * len(self.alive))
            block = slot // BLOCK
            if block >= len(self.blocks):
                size = BLOCK if block else min(BLOCK, len(self.alive))
                self.blocks.append(np.zeros((size, self.dim), dtype=np.int8))
            elif slot % BLOCK >= len(self.blocks[block]):  # the first block grows with the bucket, up to BLOCK
                extra = min(BLOCK, len(self.alive)) - len(self.blocks[0])
                self.blocks[0] = np.concatenate((self.blocks[0], np.zeros((extra, self.dim), dtype=np.int8)))
            self.keys.append(None)
            self.fingerprints.append(None)
            self.expires.append(0.0)
        for w in range(WORDS):
            self.sigs[w][slot] = row.signature[w]
        self.alive[slot] = True
        self.blocks[slot // BLOCK][slot % BLOCK], self.scales[slot] = quantize(row.vector)
        self.keys[slot] = row.key
        self.fingerprints[slot] = row.fingerprint
        self.expires[slot] = row.expires_at
        return slot

    def drop(self, slot: int) -> None:
        self.alive[slot] = False
        self.keys[slot] = None
        self.fingerprints[slot] = None
        self.free.append(slot)

    def _grow(self, size: int) -> None:
        n = len(self.alive)
        self.sigs = [np.concatenate((s, np.zeros(size - n, dtype=np.uint64))) for s in self.sigs]
        self.alive = np.concatenate((self.alive, np.zeros(size - n, dtype=bool)))
        self.scales = np.concatenate((self.scales, np.zeros(size - n, dtype=np.float32)))
        self._xor = np.zeros(size, dtype=np.uint64)
        self._dist = np.zeros(size, dtype=np.uint8)

    def candidates(self, signature: U64, within: int) -> npt.NDArray[np.intp]:
        """The RERANK live slots nearest `signature` (none farther than `within` bits), in two stages: the
        PREFILTER nearest by the first 64 bits (one pass over 8 bytes a row), then the nearest of those by all."""
        n = self.high
        xor, dist = self._xor[:n], self._dist[:n]
        np.bitwise_xor(self.sigs[0][:n], signature[0], out=xor)
        np.bitwise_count(xor, out=dist)
        # The smallest radius holding PREFILTER rows, by bisection: a few passes over one byte a row, cheaper than
        # sorting (at a low min_score, half the rows are within reach).
        radius = min(64, within)  # 64 bits of the row cannot differ by more
        if np.count_nonzero(dist <= radius) > PREFILTER:
            lo, hi = 0, radius
            while lo < hi:
                mid = (lo + hi) // 2
                if np.count_nonzero(dist <= mid) >= PREFILTER:
                    hi = mid
                else:
                    lo = mid + 1
            radius = lo
        near = np.flatnonzero(dist < radius)
        if len(near) < PREFILTER:  # rows at the radius itself, as many as there is room for
            near = np.concatenate((near, np.flatnonzero(dist == radius)[: PREFILTER - len(near)]))
        near = near[self.alive[near]]
        full = dist[near].astype(np.intp)
        for w in range(1, WORDS):
            full += np.bitwise_count(self.sigs[w][near] ^ signature[w])
        keep = full <= within
        near, full = near[keep], full[keep]
        if len(near) > RERANK:
            near = near[np.argsort(full, kind="stable")[:RERANK]]
        return near

    def scores(self, slots: npt.NDArray[np.intp], vector: F32) -> F32:
        """Cosine of each slot's row with `vector` (both unit norm), from the quantized rows."""
        rows = np.empty((len(slots), self.dim), dtype=np.int8)
        for i, slot in enumerate(slots.tolist()):
            rows[i] = self.blocks[slot // BLOCK][slot % BLOCK]
        scores: F32 = (rows.astype(np.float32) @ vector) * self.scales[slots]
        return scores


class _Project:
    def __init__(self) -> None:
        self.scopes: dict[str, dict[Bucket, _Bucket]] = {}
        # key -> (bucket, slot), least recently used first: one entry per exact-cache key.
        self.order: OrderedDict[str, tuple[_Bucket, int]] = OrderedDict()


class VectorIndex:
    """Rows of every project, bounded by `max_entries` per project and `max_projects`; synchronous and local."""

    def __init__(self, *, max_entries: int, max_projects: int) -> None:
        self.max_entries = max_entries
        self.max_projects = max_projects
        self._projects: OrderedDict[str, _Project] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return sum(len(p.order) for p in self._projects.values())

    def entries(self, project: str) -> int:
        p = self._projects.get(project)
        return 0 if p is None else len(p.order)

    def add(self, row: Row) -> None:
        p = self._projects.get(row.project)
        if p is None:
            p = self._projects[row.project] = _Project()
            while len(self._projects) > self.max_projects:
                _, gone = self._projects.popitem(last=False)
                self.evicted += len(gone.order)
        else:
            self._projects.move_to_end(row.project)
        if row.key in p.order:
            self._remove(p, row.key)
        buckets = p.scopes.setdefault(row.scope, {})
        key = bucket_of(row.fingerprint)
        bucket = buckets.get(key)
        if bucket is None or bucket.dim != len(row.vector):
            bucket = buckets[key] = _Bucket(row.scope, key, len(row.vector))
        p.order[row.key] = (bucket, bucket.put(row))
        while len(p.order) > self.max_entries:
            self._remove(p, next(iter(p.order)))
            self.evicted += 1

    def lookup(
        self,
        project: str,
        scope: str,
        vector: F32,
        signature: U64,
        fp: Fingerprint,
        min_score: float,
        now: float,
    ) -> Found | None:
        """The best-scoring live row of this project and scope at or above `min_score` that the veto lets
        through (Found with its key), or what was refused (Found with key None), or None when nothing scored.
        Only the rows of the turn's bucket are searched: any other would be refused by the veto."""
        p = self._projects.get(project)
        buckets = p.scopes.get(scope) if p is not None else None
        bucket = buckets.get(bucket_of(fp)) if buckets is not None else None
        if p is None or bucket is None or len(bucket) == 0 or bucket.dim != len(vector):
            return None
        slots = bucket.candidates(signature, max_distance(min_score))
        if not len(slots):
            return None
        scores = bucket.scores(slots, vector)
        vetoed: list[str] = []
        for i in np.argsort(-scores)[:VETO_TRIES].tolist():
            score = float(scores[i])
            if score < min_score:
                break
            slot = int(slots[i])
            key, other = bucket.keys[slot], bucket.fingerprints[slot]
            if key is None or other is None:
                continue
            if bucket.expires[slot] <= now:
                self._remove(p, key)
                continue
            reason = veto(fp, other)
            if reason is not None:
                vetoed.append(reason)
                continue
            p.order.move_to_end(key)
            self._projects.move_to_end(project)
            return Found(key, score, vetoed)
        return Found(None, 0.0, vetoed) if vetoed else None

    def purge(self, project: str, scope: str | None = None) -> tuple[int, Iterator[None]]:
        """Rows of the project (or of one of its scopes) out of every lookup at once; returns how many, and the
        rest of the work (forgetting them, freeing their memory) in steps of about CLEANUP_STEP rows to run with
        a yield to the event loop between: a scope of 100,000 rows is several milliseconds of work."""
        p = self._projects.get(project)
        if p is None:
            return 0, iter(())
        if scope is None:
            del self._projects[project]
            return len(p.order), _forget_project(p)
        gone = p.scopes.pop(scope, None)
        if gone is None:
            return 0, iter(())
        return sum(len(b) for b in gone.values()), _forget_buckets(p, list(gone.values()))

    def _remove(self, p: _Project, key: str) -> None:
        bucket, slot = p.order.pop(key)
        bucket.drop(slot)
        if len(bucket) == 0:
            buckets = p.scopes.get(bucket.scope)
            if buckets is not None and buckets.get(bucket.key) is bucket:
                del buckets[bucket.key]
                if not buckets:
                    del p.scopes[bucket.scope]


CLEANUP_STEP = 2000


def _forget_buckets(p: _Project, buckets: list[_Bucket]) -> Iterator[None]:
    """The purged scope's keys out of its project's LRU order (a key added again since, elsewhere, stays)."""
    done = 0
    for bucket in buckets:
        for key in bucket.keys:
            if key is not None and (entry := p.order.get(key)) is not None and entry[0] is bucket:
                del p.order[key]
            done += 1
            if done % CLEANUP_STEP == 0:
                yield


def _forget_project(p: _Project) -> Iterator[None]:
    """The purged project's rows freed a step at a time (dropping them at once would free them at once)."""
    while p.order:
        for _ in range(min(CLEANUP_STEP, len(p.order))):
            p.order.popitem()
        yield
    done = 0
    for buckets in p.scopes.values():
        for bucket in buckets.values():
            while bucket.keys:
                done += min(CLEANUP_STEP, len(bucket.keys))
                del bucket.keys[-CLEANUP_STEP:]
                del bucket.fingerprints[-CLEANUP_STEP:]
                if done >= CLEANUP_STEP:
                    done = 0
                    yield
    p.scopes.clear()
