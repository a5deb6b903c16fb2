"""One sink's disk spool: append-only, size-capped, fsynced, read back in order, exactly once across restarts.

A spool owns its folder alone: several worker processes (server.workers > 1) each run an outbox for the same sink,
so the sink's folder holds slots, `<folder>/0`, `<folder>/1`, ..., and `open` claims the first one whose `lock`
file it can lock (`flock`, held until `close`; the kernel releases it when the process dies). A worker started
later thus takes over a slot a dead or stopped worker left, and replays its records. The size cap is per slot.

In its slot, records are JSON lines (`orjson.dumps(record) + b"\\n"`; orjson never emits a raw newline) in
numbered segment files, `0000000000.spool`, `0000000001.spool`, ... A `cursor` file holds the segment and byte
offset read up to, replaced atomically (write, fsync, rename) on every `ack`, so that a restart resumes exactly
after the last acknowledged record: no duplicates, no gaps. Fully consumed segments are deleted.

A crash in the middle of an append leaves a torn last line: it was never acknowledged to the caller as written,
so `open` cuts it off. The methods are synchronous and not thread-safe: the outbox calls them from one thread.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.store.records import json_safe

logger = logging.getLogger("gateway.telemetry")

SUFFIX = ".spool"
CURSOR = "cursor"
LOCK = "lock"
MAX_SLOTS = 1024  # far more workers than any host runs: past this, something else holds the locks

# (segment, byte offset after a line, lines passed since the read's start)
Position = tuple[int, int, int]


def json_line(record: Any) -> bytes:
    """A record as one JSON line, whatever it holds: a value JSON has no type for as its text (default=str), and
    when orjson cannot encode it at all (an int past 64 bits, a lone surrogate), made safe first (json_safe)."""
    try:
        return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return orjson.dumps(json_safe(record), option=orjson.OPT_APPEND_NEWLINE)


class Spool:
    """`directory` is the sink's folder; the spool uses the slot it claims in it (`self.directory` once open).
    `max_bytes` caps the records not yet acknowledged, per slot (per worker): the disk may hold up to a segment
    more, the consumed start of the oldest one, so segments are at most a quarter of the cap."""

    def __init__(
        self, directory: Path, *, max_bytes: int, fsync: bool = True, segment_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self.parent = Path(directory)
        self.directory = self.parent  # the claimed slot, from open() on
        self.slot: int | None = None
        self.max_bytes = max_bytes
        self.fsync = fsync
        # Small enough that consumed segments are deleted (and their room given back) well before the cap.
        self.segment_bytes = min(segment_bytes, max(1, max_bytes // 4))
        self._lock_fd: int | None = None
        # Bytes of whole lines in each segment on disk, oldest first (a dict keeps insertion order).
        self._sizes: dict[int, int] = {}
        self._cursor = (0, 0)  # (segment, offset) read and acknowledged up to
        self._count = 0  # lines past the cursor
        self._next = 0  # number of the next new segment
        self._writer: BinaryIO | None = None
        self._writer_segment = -1
        # Where each record of the last read ends, and where the read stopped (past any unreadable line).
        self._read_ends: list[Position] = []
        self._read_tail: Position = (0, 0, 0)
        self.corrupt = 0  # lines skipped because they did not parse (disk damage); the caller counts them lost
        self._opened = False

    # --- opening: recover what an earlier process left -------------------------------------------------------

    def open(self) -> None:
        if self._lock_fd is None:
            self._claim()
        try:
            self._recover()
        except BaseException:
            self._release()  # a retried open() claims again, and must not find its own lock in the way
            raise

    def _claim(self) -> None:
        """Lock the first free slot folder under the parent, creating it if need be."""
        for n in range(MAX_SLOTS):
            slot = self.parent / str(n)
            slot.mkdir(parents=True, exist_ok=True)
            fd = os.open(slot / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # another process's (or another Spool's) slot
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd, self.slot, self.directory = fd, n, slot
            return
        raise BlockingIOError(
            errno.EWOULDBLOCK, f"telemetry spool {self.parent}: all {MAX_SLOTS} slots are locked by other spools"
        )

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
            self.slot = None
            self.directory = self.parent

    def _recover(self) -> None:
        (self.directory / (CURSOR + ".tmp")).unlink(missing_ok=True)
        found = sorted(int(p.stem) for p in self.directory.glob("*" + SUFFIX) if p.stem.isdigit())
        seg, off = self._load_cursor(default=(found[0] if found else 0, 0))
        self._sizes.clear()
        self._count = 0
        for number in found:
            path = self._path(number)
            if number < seg:
                # Consumed; the process stopped between saving the cursor and deleting the segment.
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                logger.warning("telemetry spool %s: cutting a torn last line off %s", self.directory, path.name)
                with path.open("r+b") as f:
                    f.truncate(end)
                    self._sync(f)
            self._sizes[number] = end
            start = min(off, end) if number == seg else 0
            self._count += data.count(b"\n", start, end)
        self._next = max([*self._sizes, seg - 1]) + 1
        if seg not in self._sizes:
            # The cursor's segment is gone: what is left starts at the next one (or at a new one).
            seg, off = (next(iter(self._sizes)) if self._sizes else self._next), 0
        else:
            off = min(off, self._sizes[seg])
        self._opened = True
        if self._count == 0:
            self._reset()
        else:
            self._save_cursor(seg, off)

    def _load_cursor(self, default: tuple[int, int]) -> tuple[int, int]:
        path = self.directory / CURSOR
        try:
            seg, off = (int(x) for x in path.read_bytes().split())
        except FileNotFoundError:
            return default
        except ValueError:
            # Replaying from the oldest segment may duplicate; losing the spool would be worse.
            logger.warning("telemetry spool %s: unreadable cursor, replaying from the oldest record", self.directory)
            return default
        return seg, off

    # --- writing -------------------------------------------------------------------------------------------

    def append(self, records: Sequence[dict[str, Any]]) -> int:
        """Write in order, durably (fsync) before returning. Stops at the first record that would exceed the cap:
        returns how many were written, and the caller counts the rest as dropped."""
        if not self._opened:
            raise ValueError(f"telemetry spool {self.parent} is not open: call open() before append()")
        disk = self.size_bytes  # only what is not yet acknowledged counts against the cap
        seg = next(reversed(self._sizes)) if self._sizes else None
        seg_size = self._sizes[seg] if seg is not None else 0
        written = 0
        chunk: list[bytes] = []
        try:
            for record in records:
                line = json_line(record)
                if disk + len(line) > self.max_bytes:
                    break
                if seg is None or (seg_size and seg_size + len(line) > self.segment_bytes):
                    if seg is not None and chunk:
                        written += self._write(seg, chunk)
                        chunk = []
                    seg, seg_size = self._new_segment(), 0
                chunk.append(line)
                seg_size += len(line)
                disk += len(line)
            if seg is not None and chunk:
                written += self._write(seg, chunk)
        except OSError:
            if not written:
                raise
            # What was written stays, in order; the caller counts the rest as dropped.
            logger.exception("telemetry spool %s: write failed after %d records", self.directory, written)
        return written

    def _write(self, seg: int, lines: list[bytes]) -> int:
        if self._writer is None or self._writer_segment != seg:
            self._close_writer()
            self._writer = self._path(seg).open("ab")
            self._writer_segment = seg
        size = self._sizes[seg]
        try:
            self._writer.write(b"".join(lines))
            self._writer.flush()
            self._sync(self._writer)
        except OSError:
            # Take back a partial write, or the next line would be glued to its torn end.
            self._close_writer()
            with self._path(seg).open("r+b") as f:
                f.truncate(size)
            raise
        self._sizes[seg] = size + sum(map(len, lines))
        self._count += len(lines)
        return len(lines)

    def _new_segment(self) -> int:
        number = self._next
        self._next += 1
        self._close_writer()
        self._writer = self._path(number).open("ab")
        self._writer_segment = number
        self._sizes[number] = 0
        self._sync_dir()
        return number

    # --- reading -------------------------------------------------------------------------------------------

    def read(self, max_records: int) -> list[dict[str, Any]]:
        """The oldest records not yet acknowledged; reading again without `ack` gives the same records."""
        seg0, off0 = self._cursor
        out: list[dict[str, Any]] = []
        self._read_ends = []
        self._read_tail = (seg0, off0, 0)
        lines = 0
        for seg, size in self._sizes.items():
            if seg < seg0 or len(out) >= max_records:
                continue
            pos = off0 if seg == seg0 else 0
            if pos >= size:
                continue
            with self._path(seg).open("rb") as f:
                f.seek(pos)
                while len(out) < max_records and pos < size:
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        break  # cannot happen: sizes count whole lines only
                    pos += len(line)
                    lines += 1
                    self._read_tail = (seg, pos, lines)
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        record = None
                    if not isinstance(record, dict):
                        self.corrupt += 1
                        logger.warning("telemetry spool %s: skipping an unreadable line in %s", self.directory, seg)
                        continue
                    out.append(record)
                    self._read_ends.append(self._read_tail)
        return out

    def ack(self, n: int) -> None:
        """The first n records of the last read were delivered: advance the cursor past them and persist it."""
        if not 0 <= n <= len(self._read_ends):
            raise ValueError(f"ack({n}) after a read of {len(self._read_ends)} records")
        # Nothing changes until the cursor is saved: should that fail (disk full), the spool is as before the
        # call, the same ack can be retried, and no record is counted (or deleted) as consumed twice.
        # All of the read: also past unreadable lines after its last record.
        seg, off, lines = self._read_tail if n == len(self._read_ends) else self._read_ends[n - 1]
        if lines:
            count = self._count - lines
            last = next(reversed(self._sizes))
            if count <= 0 or (seg == last and off >= self._sizes[last]):
                self._reset()  # everything consumed: start afresh, and give the disk back at once
            else:
                if off >= self._sizes[seg]:
                    seg, off = next(s for s in self._sizes if s > seg), 0
                self._save_cursor(seg, off)
                self._count = count
                self._delete([s for s in self._sizes if s < seg])
        self._read_ends = []
        self._read_tail = (*self._cursor, 0)

    def _reset(self) -> None:
        number = max([*self._sizes, self._next - 1]) + 1
        # The cursor first: a crash (or a failed write) before the deletions leaves segments seen as consumed.
        self._save_cursor(number, 0)
        self._close_writer()
        self._next = number
        self._count = 0
        self._delete(list(self._sizes))

    def _delete(self, numbers: list[int]) -> None:
        """Forget consumed segments, then remove their files; a file left behind is removed by the next open."""
        for number in numbers:
            del self._sizes[number]
        for number in numbers:
            try:
                self._path(number).unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("telemetry spool %s: cannot delete a consumed segment: %s", self.directory, exc)

    # --- state ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        seg, off = self._cursor
        return sum(self._sizes.values()) - (off if seg in self._sizes else 0)

    def close(self) -> None:
        self._close_writer()
        self._opened = False
        self._release()  # the slot is free for another spool (a worker started later) to take over

    # --- files ---------------------------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:010d}{SUFFIX}"

    def _save_cursor(self, seg: int, off: int) -> None:
        tmp = self.directory / (CURSOR + ".tmp")
        with tmp.open("wb") as f:
            f.write(b"%d %d\n" % (seg, off))
            f.flush()
            self._sync(f)
        os.replace(tmp, self.directory / CURSOR)
        self._sync_dir()
        self._cursor = (seg, off)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._writer_segment = -1

    def _sync(self, f: BinaryIO) -> None:
        if self.fsync:
            os.fsync(f.fileno())

    def _sync_dir(self) -> None:
        # A new or renamed file survives a power loss only once its directory entry is on disk too.
        if self.fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
