"""The gateway's own ids: records (UUIDv7) and span ids (64 random bits), unpredictable and cheap.

A record id is a UUIDv7 written as 32 lowercase hex digits: 48 bits of Unix milliseconds, then 74 random bits (the
version and variant bits set as RFC 9562 says). Time first keeps the stores' id indexes appending at one end
rather than everywhere; the random bits make an id impossible to guess or to forge from another request's, and two
ids equal only by chance (2^-74 within one millisecond). It is also a valid W3C trace id, so a request that brings
no `traceparent` uses its record id as its trace id.

Randomness comes from os.urandom, a block at a time (one system call for 409 ids): new_id costs ~0.33 µs, the
prefix-and-counter id it replaces ~0.25 µs, os.urandom(16).hex() alone ~0.5 µs, uuid4().hex ~2.4 µs (timeit, this
machine). The block is masked and hex-encoded whole, and the millisecond's 12 digits are kept until the clock
moves, so an id is one slice and one concatenation. Never `random`: the Mersenne Twister's next outputs follow
from 624 of its past ones. A forked child (uvicorn --workers, multiprocessing) drops the blocks it inherited, so
that no two processes hand out the same bits.

Thread-safe without a lock: the offsets of a block come from one iterator (next() on it is atomic under the GIL),
and a thread that finds the block spent puts a fresh one in its place, whose bits no other thread has seen.
"""

from __future__ import annotations

import os
import time

_SLOT = 10  # random bytes per record id: 80 bits, of which the version and variant fix 6
_SLOTS = 409  # ids per block: 4,090 bytes, one system call
# The block is masked as one big integer, every slot at once: the version nibble 7 on the first byte of each slot
# (the UUID's 7th byte), the variant bits 10 on the third (its 9th).
_MASK = int.from_bytes(bytes([0x0F, 0xFF, 0x3F, *[0xFF] * 7]) * _SLOTS, "big")
_BITS = int.from_bytes(bytes([0x70, 0x00, 0x80, *[0x00] * 7]) * _SLOTS, "big")
_DIGITS = 2 * _SLOT
_SPAN_BLOCK = 4096  # bytes of a span-id block: 512 ids
_time_ns = time.time_ns


class _RecordBlock:
    """os.urandom bytes as hex, cut into the last 20 digits of UUIDv7s; and the last millisecond's 12 digits."""

    __slots__ = ("hex", "offsets", "stamp")

    def __init__(self, fill: bool = True) -> None:
        size = _SLOT * _SLOTS if fill else 0
        self.hex = (int.from_bytes(os.urandom(size), "big") & _MASK | _BITS).to_bytes(size, "big").hex() if fill else ""
        self.offsets = iter(range(0, 2 * size, _DIGITS))
        self.stamp = (-1, "")  # (ms, its 12 hex digits): one tuple, so that a thread never sees half of it


class _SpanBlock:
    __slots__ = ("hex", "offsets")

    def __init__(self, fill: bool = True) -> None:
        size = _SPAN_BLOCK if fill else 0
        self.hex = os.urandom(size).hex()
        self.offsets = iter(range(0, 2 * size, 16))


# Spent blocks to begin with: the first id fills one (nothing is read from os.urandom at import time).
_records = _RecordBlock(fill=False)
_spans = _SpanBlock(fill=False)


def new_id() -> str:
    """A new record id: a UUIDv7 as 32 hex digits."""
    global _records
    block = _records
    offset = next(block.offsets, -1)
    if offset < 0:
        block = _records = _RecordBlock()
        offset = next(block.offsets)
    ms = _time_ns() // 1_000_000
    stamp = block.stamp
    if stamp[0] != ms:
        stamp = block.stamp = (ms, f"{ms & 0xFFFF_FFFF_FFFF:012x}")
    return stamp[1] + block.hex[offset : offset + _DIGITS]


def id_time_s(record_id: str) -> float | None:
    """When a record id was made (Unix seconds, to the millisecond), read from its first 12 digits; None when it is
    not one of ours (32 lowercase hex digits)."""
    if len(record_id) != _DIGITS + 12 or not all(c in _HEX for c in record_id):
        return None
    return int(record_id[:12], 16) / 1000


_HEX = frozenset("0123456789abcdef")


def id_floor(at_s: float) -> str:
    """What every record id made at `at_s` (Unix seconds) or later sorts after, and every one made before sorts
    below (its first 12 digits): a bound for a range of ids by age, served by an index on them."""
    return f"{int(at_s * 1000) & 0xFFFF_FFFF_FFFF:012x}"


def new_span_id() -> str:
    """A new W3C span id: 64 random bits as 16 hex digits, never all zeros (the invalid span id)."""
    global _spans
    while True:
        block = _spans
        offset = next(block.offsets, -1)
        if offset < 0:
            block = _spans = _SpanBlock()
            offset = next(block.offsets)
        span = block.hex[offset : offset + 16]
        if span != "0000000000000000":
            return span


def _after_fork() -> None:
    """A forked child starts with blocks of its own: the parent's are the parent's to hand out."""
    global _records, _spans
    _records = _RecordBlock(fill=False)
    _spans = _SpanBlock(fill=False)


os.register_at_fork(after_in_child=_after_fork)
