"""A ConfigMap volume as the kubelet lays it out and updates it (its AtomicWriter), for the tests of hot reload.

The mounted folder holds one timestamped directory with the real files, a symlink `..data` to it, and one symlink
per key through `..data` (`baseline.yaml -> ..data/baseline.yaml`). An update writes a new timestamped directory,
points a new symlink `..data_tmp` at it, renames `..data_tmp` over `..data` (the one atomic step), adds or removes
the per-key symlinks of keys that came or went, and deletes the old directory.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
_serial = itertools.count(1)


class ConfigMapVolume:
    def __init__(self, root: Path, files: Mapping[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.current: Path | None = None
        self.update(files)

    def update(self, files: Mapping[str, str], *, mtime_ns: int | None = None) -> None:
        """Swap in a new set of files. `mtime_ns` gives the new files that modification time (a coarse clock
        stamps two writes alike): what changes then is only where `..data` points."""
        stamp = self.root / f"..2026_12_07_13_00_00.{next(_serial):09d}"
        stamp.mkdir()
        for name, text in files.items():
            path = stamp / name
            path.write_text(text)
            if mtime_ns is not None:
                os.utime(path, ns=(mtime_ns, mtime_ns))
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.rename(tmp, self.root / DATA)
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"{DATA}/{name}")
        for link in self.root.iterdir():
            if link.is_symlink() and link.name not in (DATA, *files):
                link.unlink()
        if self.current is not None:
            shutil.rmtree(self.current)
        self.current = stamp
