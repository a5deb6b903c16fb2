from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.sinks import spool as spool_module
from gateway.sinks.spool import Spool


def records(start: int, stop: int) -> list[dict[str, object]]:
    return [{"i": i, "pad": "x" * 20} for i in range(start, stop)]


def segments(directory: Path) -> list[str]:
    """Segment files under a sink's folder, as paths relative to it (`<slot>/<segment>.spool`)."""
    return sorted(str(p.relative_to(directory)) for p in directory.glob("*/*.spool"))


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
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*.spool")) <= 10 * line
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


def test_spools_on_one_folder_take_separate_slots_and_a_freed_slot_is_taken_over(
    tmp_path: Path, opened: Callable[..., Spool]
):
    # Two workers on one sink: neither may cut, read, acknowledge or delete the other's records.
    first = opened(tmp_path, segment_bytes=100)
    second = opened(tmp_path, segment_bytes=100)
    assert (first.slot, second.slot) == (0, 1)
    assert first.directory != second.directory
    first.append(records(0, 5))
    second.append(records(100, 103))
    assert drain(second, 2) == [100, 101, 102]
    assert len(first) == 5
    first.close()  # a worker stops with records left

    # A worker started later takes the free slot, and with it the records left there.
    third = opened(tmp_path, segment_bytes=100)
    assert third.slot == 0
    assert drain(third, 2) == [0, 1, 2, 3, 4]
    assert len(second) == 0


def test_open_claims_no_slot_twice_after_a_failure(
    tmp_path: Path, opened: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch
):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    monkeypatch.setattr(spool, "_recover", lambda: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        spool.open()
    monkeypatch.undo()
    spool.open()  # retried: the lock it took was given back, so it gets the same slot
    assert spool.slot == 0
    spool.close()


def test_append_before_open_says_so(tmp_path: Path):
    with pytest.raises(ValueError, match="not open"):
        Spool(tmp_path, max_bytes=1 << 20).append(records(0, 1))


def fail_once(monkeypatch: pytest.MonkeyPatch, spool: Spool) -> list[int]:
    """Make the next cursor save fail as on a full disk; returns a list that counts the failures."""
    save = spool._save_cursor
    failures: list[int] = []

    def flaky(seg: int, off: int) -> None:
        if not failures:
            failures.append(1)
            raise OSError(28, "No space left on device")
        save(seg, off)

    monkeypatch.setattr(spool, "_save_cursor", flaky)
    return failures


@pytest.mark.parametrize("take", [4, 10])  # a partial ack, and one that consumes everything (a reset)
def test_a_failed_cursor_save_changes_nothing_and_the_ack_can_be_retried(
    tmp_path: Path, opened: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch, take: int
):
    spool = opened(tmp_path, segment_bytes=100)
    spool.append(records(0, 10))
    before = segments(tmp_path)
    assert len(spool.read(take)) == take
    failures = fail_once(monkeypatch, spool)
    with pytest.raises(OSError, match="No space left"):
        spool.ack(take)
    assert failures == [1]
    # Nothing counted as consumed, nothing deleted: the records are still there, once.
    assert len(spool) == 10
    assert segments(tmp_path) == before
    spool.ack(take)  # retried: now it holds
    assert len(spool) == 10 - take
    assert drain(spool, 3) == list(range(take, 10))
    spool.close()
    assert len(opened(tmp_path)) == 0


def test_after_a_failed_ack_reading_again_gives_the_same_records_and_none_is_lost(
    tmp_path: Path, opened: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch
):
    spool = opened(tmp_path, segment_bytes=100)
    spool.append(records(0, 10))
    spool.read(6)
    fail_once(monkeypatch, spool)
    with pytest.raises(OSError, match="No space left"):
        spool.ack(6)
    assert [r["i"] for r in spool.read(3)] == [0, 1, 2]
    spool.ack(3)
    assert drain(spool, 4) == list(range(3, 10))
    assert len(spool) == 0


def test_the_cap_counts_only_records_not_yet_acknowledged(tmp_path: Path, opened: Callable[..., Spool]):
    # Far more than the cap goes through while little is waiting: nothing may be dropped, and consumed segments
    # must be deleted although the cap is far below the default segment size.
    line = len(b'{"i":100,"pad":"xxxxxxxxxxxxxxxxxxxx"}\n')
    spool = opened(tmp_path, max_bytes=10 * line)
    assert spool.append(records(100, 104)) == 4  # a backlog that never drains: no reset gives the disk back
    for i in range(104, 600, 3):
        assert spool.append(records(i, i + 3)) == 3
        assert [r["i"] for r in spool.read(3)] == [i - 4, i - 3, i - 2]
        spool.ack(3)
        on_disk = sum(p.stat().st_size for p in tmp_path.glob("*/*.spool"))
        assert on_disk <= 10 * line + spool.segment_bytes
    assert len(spool) == 4
    assert spool.size_bytes == 4 * line


def test_slots_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: Callable[..., Spool]):
    monkeypatch.setattr(spool_module, "MAX_SLOTS", 2)
    opened(tmp_path)
    opened(tmp_path)
    with pytest.raises(BlockingIOError, match="slots are locked"):
        Spool(tmp_path, max_bytes=1 << 20).open()


def test_a_record_json_cannot_hold_is_kept_made_safe_never_failing_the_append(
    tmp_path: Path, opened: Callable[..., Spool]
):
    spool = opened(tmp_path)
    odd = {"i": 1, "big": 2**70, "text": "a\ud800b", "keys": {1: [2**64, "x"]}, "other": object}
    assert spool.append([{"i": 0}, odd, {"i": 2}]) == 3
    first, back, last = spool.read(10)
    assert (first, last) == ({"i": 0}, {"i": 2})
    assert back["big"] == str(2**70)
    assert back["text"] == "a\\ud800b"
    assert back["keys"] == {"1": [str(2**64), "x"]}
    assert back["other"] == str(object)
