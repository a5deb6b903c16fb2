"""Nothing lost: whether PostgreSQL is up, gone or hung, a gateway killed with SIGKILL loses no record of a request
it answered more than 3 s before (README, "Nothing lost"). The gateway runs as a process of its own, PostgreSQL
behind a proxy that cuts or freezes it; requests are numbered in their `metadata`; after the kill the proxy is
restored, the gateway started again on the same spool, and the table counted."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import KEY
from tests.faults import FaultyProxy
from tests.integration.helpers import wait_until
from tests.servers import gateway_process
from tests.services import drop_schema, postgres_fetch, require_postgres

WINDOW_S = 3.0


class Load:
    """Threads sending numbered requests; answered[n] = monotonic time the answer came."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.answered: dict[int, float] = {}
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
            thread.join(10)

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=self.url, timeout=5, headers=headers) as client:
            while not self._stop.is_set():
                with self._lock:
                    n = self._next
                    self._next += 1
                body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "metadata": {"n": str(n)}}
                try:
                    response = client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    continue  # the gateway was killed under it: not answered
                if response.status_code == 200:
                    self.answered[n] = time.monotonic()


def store_settled(url: str) -> bool:
    """Whether a gateway (with admin key sk-admin) has its store up and nothing left in the store's spool."""
    status = httpx.get(f"{url}/api/v1/telemetry/status", headers={"authorization": "Bearer sk-admin"})
    store_status = status.json()["sinks"]["store"]
    return bool(store_status["state"] == "ok" and store_status["spooled"] == 0)


# (fault, seconds from the fault to the kill): a hang just past write_timeout_s and spill_after_ms is the worst case,
# records having waited in memory behind the hung write until they were spilled.
CASES = [("up", 4.0), ("down", 4.0), ("hung", 4.0), ("hung", 0.9)]


@pytest.mark.parametrize(("fault", "kill_after_s"), CASES)
def test_a_kill_9_loses_no_record_answered_more_than_3_s_before_it(tmp_path, fault: str, kill_after_s: float) -> None:
    dsn = require_postgres()
    schema = f"gw_crash_{uuid.uuid4().hex[:10]}"
    with FaultyProxy.before(dsn) as proxy:
        store = f"{proxy.url(dsn)}?schema={schema}"
        # The defaults of the window's settings (flush_interval_ms, write_timeout_s, spill_after_ms).
        settings: dict[str, object] = {"telemetry": {"store": store, "flush_interval_ms": 200}}
        faults: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
            "up": (lambda: None, lambda: None),
            "down": (proxy.cut, proxy.restore),
            "hung": (proxy.freeze, proxy.thaw),
        }
        fail, recover = faults[fault]
        try:
            with gateway_process(tmp_path, **settings) as (url, proc), Load(url) as load:
                time.sleep(1.5)
                fail()
                time.sleep(kill_after_s)
                killed_at = time.monotonic()
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            answered = dict(load.answered)
            recover()
            with gateway_process(tmp_path, name="restarted", auth={"admin_key": "sk-admin"}, **settings) as (url, _):
                assert wait_until(lambda: store_settled(url), 60)
                time.sleep(0.5)
            rows = postgres_fetch(dsn, f"SELECT metadata->>'n' AS n, id FROM {schema}.model_cost_logs")
        finally:
            drop_schema(dsn, schema)
    recorded = [int(r["n"]) for r in rows if r["n"] is not None]
    assert len(recorded) == len(set(recorded)) == len({r["id"] for r in rows})  # none twice
    lost = {n: killed_at - at for n, at in answered.items() if n not in set(recorded)}
    worst = max(lost.values(), default=0.0)
    print(f"{fault} {kill_after_s} s: {len(answered)} answered, {len(lost)} lost, the oldest {worst:.2f} s before")
    assert len(answered) > 100
    assert worst < WINDOW_S, sorted(lost.values())[-10:]
