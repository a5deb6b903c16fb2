"""Gateway replicas as separate processes on fixed ports (a load balancer's upstreams), and a load of numbered
requests that remembers which replica answered each one and when."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.nginx import served_by
from tests.servers import gateway_process
from tests.services import free_port


class Replica:
    """One `gateway serve` process that can be killed with SIGKILL and started again on the same port and spool."""

    def __init__(self, tmp_path: Path, name: str, overrides: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"  # as nginx names it in x-upstream-addr
        telemetry = {**overrides.get("telemetry", {}), "spool_dir": str(tmp_path / name / "spool")}
        self.overrides = {**overrides, "telemetry": telemetry}  # a spool of its own: spools are not shared
        self.proc: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        process = gateway_process(self.tmp_path, name=self.name, port=self.port, **self.overrides)
        _, self.proc = self._stack.enter_context(process)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._stack.close()  # finds it dead: nothing else to stop

    def stop(self) -> None:
        self._stack.close()


@dataclass(frozen=True)
class Answer:
    n: int
    at: float  # time.monotonic() when the answer came
    replica: str  # host:port, from nginx's x-upstream-addr
    record_id: str  # x-gateway-request-id


class Load:
    """Threads sending numbered chat requests (`metadata: {run, n}`) through `url` until stopped or `limit` sent.

    answers: the 200s; statuses: every status seen (0 for a transport error)."""

    def __init__(self, url: str, key: str, run: str, *, threads: int = 3, limit: int = 20_000) -> None:
        self.url = url
        self.key = key
        self.run = run
        self.limit = limit  # a bound on the loop, whatever happens
        self.answers: list[Answer] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def by_replica(self, since: float = 0.0, until: float = float("inf")) -> collections.Counter[str]:
        """200s per replica, answered between since and until (monotonic)."""
        with self._lock:
            return collections.Counter(a.replica for a in self.answers if since <= a.at < until)

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, timeout=30, headers=headers) as client:
            while not self._stop.is_set():
                with self._lock:
                    n = self._next
                    self._next += 1
                if n >= self.limit:
                    return
                body = {
                    "model": "demo",
                    "messages": [{"role": "user", "content": "hi"}],
                    "metadata": {"run": self.run, "n": str(n)},
                }
                try:
                    response = client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    with self._lock:
                        self.statuses[0] += 1
                    continue
                answer = Answer(
                    n, time.monotonic(), served_by(response), response.headers.get("x-gateway-request-id", "")
                )
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.answers.append(answer)
