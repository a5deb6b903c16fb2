"""Instructions per request of a chat completion and of the same request through the Responses API, under callgrind.

    bash bench/micro_api.sh chat|responses|responses-stored     # needs valgrind

The load-independent counterpart of bench/api_cost.py: the gateway with api-cost.yaml's pipeline (auth, policy,
guardrails, route, the shipped policies) and its telemetry in SQLite, under uvicorn in this process, in front of a
canned upstream on loopback (bench/micro_route.py's). CONNS clients send N requests in all, each on its own
kept-alive connection, so that the record's and the stored responses' writers batch as under load rather than
writing one row per transaction. Instructions per request are the difference between two runs, N=1200 and N=200,
over 1000 (start-up and warm-up cancel out); the stores' threads are counted, and the run waits for them to drain.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

import orjson
import uvloop
import yaml
from micro_route import ROOT, Upstream, serving

from gateway import runtime
from gateway.config import parse_config

WARMUP = 200
CONNS = int(os.environ.get("CONNS", "20"))
KEY = "sk-bench-micro"
INSTRUCTIONS, PROMPT = "You are terse.", "Say hello in one short sentence."
BODIES = {
    "chat": (
        b"/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": PROMPT}],
            "max_tokens": 64,
            "temperature": 0,
        },
    ),
    "responses": (
        b"/v1/responses",
        {
            "model": "gpt-4o-mini",
            "instructions": INSTRUCTIONS,
            "input": PROMPT,
            "max_output_tokens": 64,
            "temperature": 0,
            "store": False,
        },
    ),
}
BODIES["responses-stored"] = (BODIES["responses"][0], {**BODIES["responses"][1], "store": True})


def config(upstream_port: int, tmp: str) -> Any:
    data = yaml.safe_load((ROOT / "bench/api-cost.yaml").read_text())
    data["server"] = {"access_log": True}
    data["providers"] = {
        "upstream": {"type": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1", "api_key": "sk-up"}
    }
    data["models"] = {"gpt-4o-mini": {"deployments": [{"provider": "upstream", "model": "gpt-4o-mini"}]}}
    data["routing"] = {"breaker": {"sync_interval_s": 3600}}
    data["auth"]["keys"][0]["key"] = KEY
    data["telemetry"] = {
        "store": f"sqlite:///{tmp}/gateway.db",
        "spool_dir": f"{tmp}/spool",
        "pricing_file": str(ROOT / "config/pricing.yaml"),
        "write_timeout_s": 60,  # under callgrind a batch takes some 50 times longer: not a stall
        # nor a record waiting a second behind it (on a busy machine, under callgrind, one did): spilled to the spool,
        # the run counted its encoding and fsyncs, 100,000 to 150,000 instructions a request more, now and then.
        "spill_after_ms": 600_000,
        # The writers batch what a flush interval brings (records, and the stored responses, which follow the same
        # interval): under callgrind a request takes some 100 times longer, on a busy machine more, so 200 ms held a
        # request or two and the count per request followed the machine's load (two runs of chat's at once:
        # 1,135,976 and 1,258,190). 10 s holds some tens, nearer a gateway under load's batches, and the count holds.
        "flush_interval_ms": 10_000,
    }
    # Work that runs by the clock (the flags' and the policies' polls of the store) is counted per second, not per
    # request: under callgrind on a busy machine a run lasts minutes, and each poll's store query and thread
    # hand-off made the count per request depend on the machine's load (chat measured 1,254,518 and 1,374,154).
    data["policies"] = {"paths": [str(ROOT / "policies")], "poll_interval_s": 3600}
    data["features"] = {"poll_interval_s": 3600}
    if os.environ.get("MEMORY_MAX"):
        data["responses"] = {"memory_max": int(os.environ["MEMORY_MAX"])}
    return parse_config(yaml.safe_dump(data), source="micro.yaml", env=os.environ, base_dir=str(ROOT))


async def client(port: int, request: bytes, count: int, expect: bytes | None = None) -> None:
    """`count` requests one after another on one kept-alive connection; each answer a 200 whose head (lowercased)
    holds `expect` when given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        lowered = head.lower()
        assert expect is None or lowered.find(expect) >= 0, head  # find: bytes' `in` raises and clears a TypeError
        start = lowered.find(b"content-length:")
        if start >= 0:
            await reader.readexactly(int(lowered[start + 15 : lowered.find(b"\r\n", start)]))
        else:
            body = b""  # chunked: read to the last chunk
            while not body.endswith(b"0\r\n\r\n"):
                body += await reader.read(65536)
    writer.close()


async def run(api: str, n: int, gateway_config: Any) -> None:
    # Opening the store (SQLite and its migrations) under callgrind on a busy machine outlasted the gateway's 10 s
    # bound: the records then waited in the spool and the first writes queued behind the open that went on (a
    # stall, a retry), in the run's count. Here it is waited for.
    runtime.STORE_OPEN_TIMEOUT_S = 3600.0
    path, body = BODIES[api]
    raw = orjson.dumps(body)
    request = (
        b"POST %s HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer %s\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (path, KEY.encode(), len(raw), raw)
    )
    async with serving(gateway_config) as port:  # its end drains the record's and the stored responses' writers
        for total in (WARMUP, n):
            share, extra = divmod(total, CONNS)
            await asyncio.gather(*(client(port, request, share + (i < extra)) for i in range(CONNS)))


async def main(api: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        await run(api, n, config(port, tmp))
    upstream.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
