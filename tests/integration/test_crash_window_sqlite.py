"""Nothing lost on SQLite either: a gateway killed with SIGKILL under load, its database file written normally or
held locked by another process (a backup, a `sqlite3` shell left in a transaction), loses no record of a request
it answered more than 3 s before, and the one started again on the same file and spool starts cleanly (the dead
one's spool lock and torn spool line left behind), replays what was spooled, and writes no record twice.
The PostgreSQL cases are test_crash_window.py's, whose load this test shares."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import wait_until
from tests.integration.test_crash_window import WINDOW_S, Load, store_settled
from tests.servers import gateway_process


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another connection holding the database's write lock (BEGIN EXCLUSIVE) until the block ends."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.parametrize(("fault", "kill_after_s"), [("up", 4.0), ("locked", 4.0), ("locked", 0.9)])
def test_a_kill_9_on_sqlite_loses_no_record_answered_more_than_3_s_before_it(
    tmp_path: Path, fault: str, kill_after_s: float
) -> None:
    db = tmp_path / "gateway.db"
    settings: dict[str, object] = {"telemetry": {"store": f"sqlite:///{db}", "flush_interval_ms": 200}}
    lock: contextlib.ExitStack = contextlib.ExitStack()
    with lock:
        with gateway_process(tmp_path, **settings) as (url, proc), Load(url) as load:
            time.sleep(1.5)
            if fault == "locked":
                lock.enter_context(locked(db))
            time.sleep(kill_after_s)
            killed_at = time.monotonic()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        answered = dict(load.answered)
    with gateway_process(tmp_path, name="restarted", auth={"admin_key": "sk-admin"}, **settings) as (url, _):
        assert wait_until(lambda: store_settled(url), 60)
        time.sleep(0.5)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT json_extract(metadata, '$.n'), id FROM model_cost_logs").fetchall()
    recorded = [int(n) for n, _ in rows if n is not None]
    assert len(recorded) == len(set(recorded)) == len({i for _, i in rows})  # none twice
    lost = {n: killed_at - at for n, at in answered.items() if n not in set(recorded)}
    worst = max(lost.values(), default=0.0)
    print(f"{fault} {kill_after_s} s: {len(answered)} answered, {len(lost)} lost, the oldest {worst:.2f} s before")
    assert len(answered) > 100
    assert worst < WINDOW_S, sorted(lost.values())[-10:]
