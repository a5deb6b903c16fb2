from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.telemetry.spool import Spool


def records(start: int, stop: int) -> list[dict[str, object]]:
    return [{"i": i, "pad": "x" * 20} for i in range(start, stop)]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.spool"))


@pytest.fixture
def opened() -> Iterator[Callable[..., Spool]]:
    made: list[Spool] = []

    def open_spool(directory: Path, **options) -> Spool:
        spool = Spool(directory, **{"max_bytes": 1 << 20, **options})
        spool.open()
        made.append(spool)
        return spool

    yield open_spool
    for spool in made:
        spool.close()


def drain(spool: Spool, batch: int) -> list[int]:
    out: list[int] = []
    while len(spool):
        got = spool.read(batch)
        assert got
        out.extend(r["i"] for r in got)
        spool.ack(len(got))
    return out


def test_append_read_ack_keep_order_over_several_segments(tmp_path: Path, opened: Callable[..., Spool]):
    spool = opened(tmp_path, segment_bytes=100)
    assert spool.append(records(0, 30)) == 30
    assert len(spool) == 30
    assert len(segments(tmp_path)) > 3
    assert drain(spool, 7) == list(range(30))
    assert len(spool) == 0
    assert spool.size_bytes == 0


def test_read_without_ack_gives_the_same_records_and_a_partial_ack_resumes_after_them(
    tmp_path: Path, opened: Callable[..., Spool]
):
    spool = opened(tmp_path, segment_bytes=100)
    spool.append(records(0, 10))
    assert [r["i"] for r in spool.read(5)] == [0, 1, 2, 3, 4]
    assert [r["i"] for r in spool.read(5)] == [0, 1, 2, 3, 4]
    spool.ack(2)
    assert len(spool) == 8
    assert [r["i"] for r in spool.read(3)] == [2, 3, 4]
    with pytest.raises(ValueError, match="ack"):
        spool.ack(4)


def test_reopen_resumes_at_the_cursor_without_duplicates_or_gaps(tmp_path: Path, opened: Callable[..., Spool]):
    spool = opened(tmp_path, segment_bytes=150)
    spool.append(records(0, 30))
    spool.ack(len(spool.read(10)))
    spool.read(5)  # read but never acknowledged: must come again
    spool.close()

    spool = opened(tmp_path, segment_bytes=150)
    assert len(spool) == 20
    spool.append(records(30, 35))
    assert drain(spool, 4) == list(range(10, 35))
    spool.close()

    spool = opened(tmp_path, segment_bytes=150)
    assert len(spool) == 0
    assert spool.read(10) == []
    assert segments(tmp_path) == []


def test_a_torn_last_line_is_ignored_and_cut_off(tmp_path: Path, opened: Callable[..., Spool]):
    spool = opened(tmp_path)
    spool.append(records(0, 5))
    spool.close()
    (last,) = segments(tmp_path)
    size = (tmp_path / last).stat().st_size
    with (tmp_path / last).open("ab") as f:
        f.write(b'{"i":5,"pad":"xx')  # the process died mid-write

    spool = opened(tmp_path)
    assert len(spool) == 5
    assert (tmp_path / last).stat().st_size == size
    spool.append(records(6, 7))
    assert drain(spool, 100) == [0, 1, 2, 3, 4, 6]


def test_the_cap_is_respected_and_append_says_how_many_fit(tmp_path: Path, opened: Callable[..., Spool]):
    line = len(b'{"i":10,"pad":"xxxxxxxxxxxxxxxxxxxx"}\n')
    spool = opened(tmp_path, max_bytes=10 * line, segment_bytes=3 * line)
    written = spool.append(records(10, 30))
    assert written == 10
    assert len(spool) == 10
    assert spool.size_bytes <= 10 * line
    assert sum(p.stat().st_size for p in tmp_path.glob("*.spool")) <= 10 * line
    assert spool.append(records(30, 31)) == 0
    # Room comes back once records are acknowledged and their segments deleted.
    spool.ack(len(spool.read(6)))
    assert spool.append(records(30, 32)) == 2
    assert drain(spool, 100) == [*range(16, 20), 30, 31]


def test_consumed_segments_are_deleted(tmp_path: Path, opened: Callable[..., Spool]):
    spool = opened(tmp_path, segment_bytes=100)
    spool.append(records(0, 20))
    before = segments(tmp_path)
    spool.ack(len(spool.read(10)))
    after = segments(tmp_path)
    assert len(after) < len(before)
    assert after == before[-len(after) :]
    drain(spool, 100)
    assert segments(tmp_path) == []


def test_an_unreadable_line_is_skipped_and_counted(tmp_path: Path, opened: Callable[..., Spool]):
    spool = opened(tmp_path)
    spool.append(records(0, 2))
    spool.close()
    (last,) = segments(tmp_path)
    with (tmp_path / last).open("ab") as f:
        f.write(b"not json\n")
    spool = opened(tmp_path)
    spool.append(records(2, 3))
    assert len(spool) == 4
    assert drain(spool, 100) == [0, 1, 2]
    assert spool.corrupt == 1
    assert len(spool) == 0
