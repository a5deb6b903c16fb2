"""How long the event loop waits for the GIL while a worker thread runs Python: the SQLite store's thread sums a
batch's usage rollups (gateway/store/rollups.py `summed`, pure Python, ~3-5 µs a row) after its inserts, and a
thread running Python keeps the GIL until the interpreter's switch interval has passed since the loop asked for it.

    .venv/bin/python bench/gil_wait.py            # ROWS=1000 SECONDS=3

A thread sums batches of ROWS rows, one after another with a 2 ms pause between (a writer under load), while the
loop runs a callback due every millisecond; printed per switch interval (5 ms, Python's default; 1 ms, what
`gateway serve` sets): the thread's CPU per batch (the size of the work) and how late the loop's callbacks ran
(p50, p99, max). The lateness is wall-clock time: on a loaded machine other processes add to it, so compare the two
intervals within one run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import rollups
from gateway.store.records import RECORD_COLUMNS


def rows(n: int) -> list[tuple[object, ...]]:
    at = {name: i for i, name in enumerate(RECORD_COLUMNS)}
    made = []
    for i in range(n):
        row: list[object] = [None] * len(RECORD_COLUMNS)
        values = {"ts": time.time(), "status": 200, "latency_ms": 21.5 + i % 7, "prompt_tokens": 19,
                  "completion_tokens": 16, "total_tokens": 35, "cost_usd": 0.0000125, "project": "bench",
                  "key_name": "bench", "team": "", "model_requested": "gpt-4o-mini",
                  "model_served": "gpt-4o-mini-2024-07-18", "provider": "upstream", "key_id": ""}  # fmt: skip
        for name, value in values.items():
            row[at[name]] = value
        made.append(tuple(row))
    return made


async def measure(interval_s: float, batch: list[tuple[object, ...]], seconds: float) -> str:
    sys.setswitchinterval(interval_s)
    stop = threading.Event()
    cpu: list[float] = []

    def writer() -> None:
        while not stop.is_set():
            started = time.thread_time()
            rollups.summed(batch)
            cpu.append(time.thread_time() - started)
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    loop = asyncio.get_running_loop()
    late: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        late.append(time.perf_counter() - due)
    stop.set()
    thread.join()
    late.sort()
    cpu.sort()

    def ms(values: list[float], q: float) -> str:
        return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:.2f}"

    return (
        f"switch interval {interval_s * 1000:g} ms: a batch {ms(cpu, 0.5)} ms of CPU (max {ms(cpu, 1.0)}); "
        f"the loop late p50 {ms(late, 0.5)} p99 {ms(late, 0.99)} max {ms(late, 1.0)} ms"
    )


async def main() -> None:
    batch = rows(int(os.environ.get("ROWS", "1000")))
    seconds = float(os.environ.get("SECONDS", "3"))
    for interval_s in (0.005, 0.001, 0.005, 0.001):
        print(await measure(interval_s, batch, seconds), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
