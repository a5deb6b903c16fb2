"""The ratelimit filter (on Redis) and the guardrails filter (on the shipped policies), in process, as the pipeline
calls them: N chat requests of the bench's body, each through auth and policy (always), then the stages named by
--stages (on_request in order, on_response in reverse, with the mock's usage and answer), `concurrency` at a time.

    .venv/bin/python bench/micro_limits.py --stages ratelimit,guardrails -n 2000   # wall time, for a look
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.rl .venv/bin/python bench/micro_limits.py \
        --stages ratelimit -n 2000                                                  # instructions: the figure

A stage's instructions per request are (Ir with it - Ir with --stages none) / N, same N: deterministic on a
loaded machine where wall time is not. The limits are bench/reference-full.yaml's (RPM, TPM and a budget, Redis
at $BENCH_REDIS, default DB 14), the policies ../policies, the guardrails those policies attach (baseline's
length, pii, injection).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import time
from pathlib import Path

import orjson
import uvloop

from gateway.config import parse_config
from gateway.context import RequestContext, Usage
from gateway.filters.base import Stage
from gateway.reply import Reply
from gateway.runtime import Gateway
from gateway.state.limiter_redis import RedisLimiter

HERE = Path(__file__).parent
CONFIG = """
providers:
  upstream: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-bench-upstream}
models:
  gpt-4o-mini:
    deployments:
      - {provider: upstream, model: gpt-4o-mini}
pipeline: [auth, policy, ratelimit, guardrails, route]
auth:
  mode: keys
  keys:
    - {name: bench, key: sk-bench-key, project: bench}
limits:
  backend: ${BENCH_REDIS:-redis://127.0.0.1:6379/14}
  rules:
    - {scope: key, rpm: 100000000, tpm: 1000000000000}
    - {scope: project, budget_usd: 1000000000, period: month}
policies:
  paths: [../policies]
telemetry:
  store: none
  pricing_file: ../config/pricing.yaml
"""
BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},'
    b'{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}'
)
ANSWER = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33},
})  # fmt: skip
HEADERS = [(b"authorization", b"Bearer sk-bench-key"), (b"content-type", b"application/json")]


async def one(gateway: Gateway, stages: list[Stage]) -> None:
    ctx = RequestContext(request_id="r", endpoint="chat/completions", headers=HEADERS, raw_body=b"", body={})
    pipeline = gateway.pipeline
    for stage in pipeline.door:
        await stage.identify(ctx)
    ctx.set_body(BODY, orjson.loads(BODY))
    policy = next(f for f in pipeline.filters if f.name == "policy")
    await policy.on_request(ctx)
    for stage in stages:
        await stage.on_request(ctx)
    ctx.deployment = gateway.models["gpt-4o-mini"].deployments[0]
    ctx.served_model = "gpt-4o-mini-2024-07-18"
    ctx.usage = Usage(prompt_tokens=24, completion_tokens=9)
    reply = Reply(status=200, body=ANSWER)
    for stage in reversed(stages):
        await stage.on_response(ctx, reply)


async def run(gateway: Gateway, stages: list[Stage], n: int, concurrency: int) -> None:
    for _ in range(n // concurrency):
        await asyncio.gather(*(one(gateway, stages) for _ in range(concurrency)))
    limiter = gateway.rate_limits.failover.primary if gateway.rate_limits is not None else None
    if isinstance(limiter, RedisLimiter):
        await limiter.flush()  # the settlements these requests queued are theirs too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="ratelimit,guardrails", help="comma-separated, or none")
    parser.add_argument("-n", type=int, default=2000, help="requests")
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight at once")
    args = parser.parse_args()
    config = parse_config(CONFIG, env=os.environ, base_dir=str(HERE))
    gateway = Gateway(config, access_log_stream=open(os.devnull, "wb"))  # noqa: SIM115
    names = [] if args.stages == "none" else args.stages.split(",")
    stages = [f for name in names for f in gateway.pipeline.filters if f.name == name]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    # Only what these stages need: no timers or background tasks whose work would grow with the (valgrind-slowed)
    # wall time and blur the per-request figure.
    gateway.policies.load_files_now()
    loop.run_until_complete(gateway.identity.open())
    try:
        loop.run_until_complete(run(gateway, stages, 20, 1))  # warm-up: checks built, the script loaded, connected
        started = time.perf_counter()
        # Run inside functools.reduce, a C function that nothing else here calls, so that callgrind's
        # --toggle-collect=functools_reduce counts these requests and nothing of the start-up.
        functools.reduce(lambda _, __: loop.run_until_complete(run(gateway, stages, args.n, args.concurrency)), [0], 0)
        elapsed = time.perf_counter() - started
        if gateway.rate_limits is not None and gateway.rate_limits.failover.degraded:
            raise SystemExit("Redis was unreachable: the figures would be the memory limiter's")
        print(f"{args.stages}: {args.n} requests, {elapsed / args.n * 1e6:.1f} us each (wall, for a look only)")
    finally:
        if gateway.rate_limits is not None:
            loop.run_until_complete(gateway.rate_limits.close())
        loop.run_until_complete(gateway.identity.close())
        loop.close()


if __name__ == "__main__":
    main()
