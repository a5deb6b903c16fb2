"""The gateway's ids are unique and unpredictable: UUIDv7 record ids whose 74 random bits look like coin flips
(no counter, no prefix shared beyond the clock), span ids of 64 such bits, different in every process after a fork
and in every thread at once."""

from __future__ import annotations

import os
import re
import sys
import threading
import uuid
import warnings

import pytest

import gateway.ids
from gateway.ids import new_id, new_span_id

N = 10_000
# The random bits of a record id, as (hex digit, mask) pairs: all of digits 13-15 and 18-31, the two low bits of
# digit 16 (digit 12 is the version, the top bits of 16 the variant; 0-11 the milliseconds).
_RANDOM_BITS = 12 + 2 + 60


def random_part(ident: str) -> int:
    """The 74 random bits of a record id as one integer."""
    value = int(ident, 16)
    rand_b = value & ((1 << 62) - 1)
    rand_a = (value >> 64) & 0xFFF
    return rand_a << 62 | rand_b


def assert_like_coin_flips(values: list[int], bits: int) -> None:
    """Each bit is set in about half the values, and consecutive values differ in about half their bits: a
    counter, a shared prefix, a constant or a weak generator fail one or the other. The bounds are six standard
    deviations wide (a false alarm about once in 10^9 runs per bit)."""
    n = len(values)
    spread = 6 * (n / 4) ** 0.5
    for bit in range(bits):
        ones = sum((v >> bit) & 1 for v in values)
        assert abs(ones - n / 2) < spread, f"bit {bit} is set in {ones} of {n}"
    distances = [bin(a ^ b).count("1") for a, b in zip(values, values[1:], strict=False)]
    mean = sum(distances) / len(distances)
    assert abs(mean - bits / 2) < 6 * (bits / 4 / len(distances)) ** 0.5, f"mean Hamming distance {mean}"


def test_record_ids_are_uuid7_in_32_hex_digits_and_all_distinct() -> None:
    ids = [new_id() for _ in range(N)]  # several blocks of os.urandom
    assert len(set(ids)) == N
    for ident in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", ident)
        parsed = uuid.UUID(ident)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)


def test_the_random_bits_of_record_ids_look_like_coin_flips() -> None:
    assert_like_coin_flips([random_part(new_id()) for _ in range(N)], _RANDOM_BITS)


def test_span_ids_are_64_random_bits_never_zero() -> None:
    spans = [new_span_id() for _ in range(N)]
    assert len(set(spans)) == N
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) for s in spans)
    assert_like_coin_flips([int(s, 16) for s in spans], 64)


def test_an_all_zero_span_id_is_never_given_out(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.urandom
    calls = []

    def zeros_first(n: int) -> bytes:
        calls.append(n)
        return bytes(n) if len(calls) == 1 else real(n)

    monkeypatch.setattr(gateway.ids.os, "urandom", zeros_first)
    monkeypatch.setattr(gateway.ids, "_spans", gateway.ids._SpanBlock(fill=False))
    assert new_span_id() != "0" * 16
    assert len(calls) == 2  # the zero block was read through, then a fresh one


def test_a_record_id_begins_with_the_milliseconds_of_its_making(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_767_225_600_123_456_789]
    monkeypatch.setattr(gateway.ids, "_time_ns", lambda: now[0])
    first = new_id()
    assert int(first[:12], 16) == 1_767_225_600_123
    now[0] += 1_000_000  # a millisecond later
    second = new_id()
    assert int(second[:12], 16) == 1_767_225_600_124
    assert second > first  # time-ordered: the stores' id indexes grow at one end


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gives_out_ids_the_parent_never_does() -> None:
    new_id(), new_span_id()  # the parent holds partly used blocks when it forks
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks; the child here only makes ids and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join([new_id() for _ in range(500)] + [new_span_id() for _ in range(500)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(500)] + [new_span_id() for _ in range(500)]
    assert len(child) == 1000
    assert not set(child) & set(parent)
    # Not a clock effect: the random parts differ too.
    assert not {c[12:] for c in child[:500]} & {p[12:] for p in parent[:500]}


def test_threads_taking_ids_at_once_never_get_the_same() -> None:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, block refills included
    try:
        results: list[list[str]] = [[] for _ in range(4)]

        def take(out: list[str]) -> None:
            for _ in range(5_000):
                out.append(new_id())
                out.append(new_span_id())

        threads = [threading.Thread(target=take, args=(out,)) for out in results]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    every = [i for out in results for i in out]
    assert len(every) == 40_000
    assert len(set(every)) == 40_000
