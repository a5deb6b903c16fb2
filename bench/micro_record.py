"""The record's path, in process, for instruction counts (issue 15's budget: record building, the store writer,
the access log, the sinks' encoding). Not a timing: run it under callgrind, once with N records and once with 0,
and divide by N:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python bench/micro_record.py record 2000         # or: store, access, sinks, queue

Under valgrind, the phase turns callgrind's instrumentation on and off around itself (CALLGRIND_START/
STOP_INSTRUMENTATION, from a few lines of C compiled with `cc` on the spot), so that the count is the phase's
alone: the start-up is not counted. Without a C compiler, run it with N and with 0 and divide the difference.

Real records first: a few chat completions through the app (ASGI, the mock provider; auth, policy with the shipped
policies, in-memory rate limits, guardrails, route, content logging redacted, as bench/reference-full.yaml), whose
contexts and records are kept. Then one phase, N times, with the code the pipeline runs:
- record: Recorder.to_record(ctx), what the request path pays at its end;
- store: SQLiteStore.write in batches of 300 (about a flush's worth at S1), the store's thread included;
- access: AccessLog.write in batches of 300, to /dev/null;
- sinks: LangfuseSink.write and OtlpSink.write in batches of 128 (a sink's default), posting to a fake transport.
- queue: TelemetryQueue.flush_once in batches of 300 into the store (its outbox), the access log and both sinks'
  outboxes, delivered as bench/reference-full.yaml runs them (the store in SQLite): the whole background path.
  Its count includes the gateway's start and close: compare it between commits, not with the others.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway.app import build_app
from gateway.config import parse_config
from gateway.config.telemetry import SinkConfig
from gateway.sinks.access_log import AccessLog
from gateway.sinks.exporters import LangfuseSink, OtlpSink
from gateway.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-micro-0123456789abcdef"
PROMPT = "Write one short sentence about the sea, and mention the harbour at dawn."


def config(tmp: Path) -> Any:
    data = {
        "server": {"access_log": False},
        "providers": {"mock": {"type": "mock"}},
        "models": {"gpt-4o-mini": {"deployments": [{"provider": "mock", "model": "gpt-4o-mini"}]}},
        "pipeline": ["auth", "policy", "ratelimit", "guardrails", "route"],
        "auth": {"mode": "keys", "keys": [{"name": "bench", "key": KEY, "project": "bench"}]},
        "limits": {
            "backend": "memory",
            "rules": [
                {"scope": "key", "rpm": 100_000_000, "tpm": 1_000_000_000_000},
                {"scope": "project", "budget_usd": 1_000_000_000, "period": "month"},
            ],
        },
        "policies": {"paths": ["policies"]},
        "telemetry": {
            "store": f"sqlite:///{tmp / 'capture.db'}",
            "content": {"mode": "redacted", "max_chars": 2000},
            "pricing_file": "config/pricing.yaml",
        },
    }
    return parse_config(yaml.safe_dump(data), source="micro.yaml", env=os.environ, base_dir=str(ROOT))


async def post(app: Any, body: bytes) -> int:
    """One POST /v1/chat/completions through the ASGI app; the answer's status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
        "headers": [(b"host", b"gateway"), (b"authorization", f"Bearer {KEY}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> Mapping[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def capture(tmp: Path, n: int = 8) -> tuple[Any, list[Any], list[dict[str, Any]]]:
    """The gateway's recorder, the contexts of n requests, and their finished records (content rendered)."""
    app = build_app(config(tmp))
    gateway = app.state.gateway
    await gateway.open()
    recorder = gateway.recorder
    contexts: list[Any] = []
    items: list[Any] = []
    to_record = recorder.to_record

    def keep(ctx: Any) -> Any:
        contexts.append(ctx)
        return to_record(ctx)

    recorder.to_record = keep

    class Keep:
        put = items.append

    recorder.queue = Keep()
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]})
    for _ in range(n):
        assert await post(app, body) == 200
    records = await recorder.to_records(items)
    recorder.to_record = to_record
    recorder.queue = None
    await gateway.close()
    return recorder, contexts, records


def copies(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """n records like the captured ones, each with an id of its own (the store and the sinks key on it)."""
    out = []
    for i in range(n):
        record = dict(records[i % len(records)])
        record["id"] = f"{i:032x}"
        record["ts"] = record["ts"] + i * 1e-4
        out.append(record)
    return out


async def batches(write: Any, records: list[dict[str, Any]], size: int) -> None:
    for start in range(0, len(records), size):
        await write(records[start : start + size])


async def fake_transport(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    return 200, b'{"successes":[],"errors":[]}' if url.endswith("/ingestion") else b"{}"


_MARKS = """
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def callgrind_marks(tmp: Path) -> Any:
    """start() and stop() of callgrind's instrumentation when running under valgrind; None otherwise."""
    if "vgpreload" not in os.environ.get("LD_PRELOAD", ""):
        return None
    source, library = tmp / "marks.c", tmp / "marks.so"
    source.write_text(_MARKS)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    return ctypes.CDLL(str(library))


async def main(phase: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        recorder, contexts, records = await capture(tmp)
        many = copies(records, n)
        store = SQLiteStore(str(tmp / "store.db"))
        await store.open()
        await store.write(copies(records, 1))  # the first write after opening checks for doubles
        url = "http://127.0.0.1:1"
        langfuse = LangfuseSink("langfuse", SinkConfig(type="langfuse", url=url), fake_transport)
        otlp = OtlpSink("otel", SinkConfig(type="otlp", url=url), fake_transport)
        devnull = open(os.devnull, "wb")  # noqa: SIM115, ASYNC230 - /dev/null, closed below
        marks = callgrind_marks(tmp)
        gc.collect()
        if marks is not None:
            marks.start()
        if phase == "record":
            for i in range(n):
                recorder.to_record(contexts[i % len(contexts)])
        elif phase == "store":
            await batches(store.write, many, 300)
        elif phase == "access":
            await batches(AccessLog(devnull).write, many, 300)
        elif phase == "sinks":
            await batches(langfuse.write, many, 128)
            await batches(otlp.write, many, 128)
        elif phase == "queue":
            await queue_phase(tmp, many)
        else:
            raise SystemExit(f"unknown phase {phase!r}: record, store, access, sinks, queue")
        if marks is not None:
            marks.stop()
        devnull.close()
        await store.close()


async def queue_phase(tmp: Path, records: list[dict[str, Any]]) -> None:
    """The telemetry writer's whole background path, as the Gateway wires it (gateway/runtime.py)."""
    from gateway.runtime import Gateway
    from gateway.tasks import cancel

    data = {
        "server": {"access_log": True},
        "providers": {"mock": {"type": "mock"}},
        "models": {"gpt-4o-mini": {"deployments": [{"provider": "mock", "model": "gpt-4o-mini"}]}},
        "pipeline": ["auth", "route"],
        "auth": {"mode": "keys", "keys": [{"name": "bench", "key": KEY, "project": "bench"}]},
        "telemetry": {
            "store": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "pricing_file": "config/pricing.yaml",
            "sinks": {
                "langfuse": {"type": "langfuse", "url": "http://127.0.0.1:1", "public_key": "pk", "secret_key": "sk"},
                "otel": {"type": "otlp", "url": "http://127.0.0.1:1"},
            },
        },
    }
    cfg = parse_config(yaml.safe_dump(data), source="micro.yaml", env=os.environ, base_dir=str(ROOT))
    with open(os.devnull, "wb") as devnull:  # noqa: ASYNC230 - /dev/null
        gateway = Gateway(cfg, access_log_stream=devnull)
        for outbox in gateway.outboxes:
            if hasattr(outbox.sink, "_transport"):
                outbox.sink._transport = fake_transport
        await gateway.open()
        await cancel(gateway.queue._task)  # flushed here, batch by batch, instead of on its timer
        for start in range(0, len(records), 300):
            for record in records[start : start + 300]:
                gateway.queue.put(dict(record))
            await gateway.queue.flush_once()
            await asyncio.sleep(0.01)  # the outboxes deliver
        await gateway.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
