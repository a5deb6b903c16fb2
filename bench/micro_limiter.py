"""The one-server Redis limiter's own Python work for one request, without the network: the reservation's command
for bench/reference-full.yaml's three checks (rpm, tpm, the project's budget), its reply read back, and the
settlement's command for two of them. Run by `SCRIPT=bench/micro_limiter.py bash bench/micro_route.sh redis`
(instructions per request under callgrind)."""

from __future__ import annotations

import sys

from gateway.state import limiter_redis
from gateway.state.limiter import BUCKET, BUDGET, REQUESTS, TOKENS, Check

CHECKS = [
    Check("{gw:rl}:key:k:rpm.b", BUCKET, 1e8, 1e8, 60_000, 1.0, REQUESTS),
    Check("{gw:rl}:key:k:tpm.b", BUCKET, 1e12, 1e12, 60_000, 0.0, TOKENS),
    Check("{gw:rl}:project:p:usd:2026-12", BUDGET, 1e9, 1e9, 86_400_000, 0.0, soft=8e8),
]
REPLY = [1, b"99999999", b"999999999988", b"999999999.9", b"1", b"1", b"1", 1_765_000_000_123]


def main(mode: str, n: int) -> None:
    assert mode == "redis", mode
    clock = limiter_redis.RedisClock(0.25)
    clock.saw(1_765_000_000_000, 1000.0)
    for _ in range(n):
        checks = [CHECKS[0].taking(1.0), CHECKS[1].taking(12.0), CHECKS[2].taking(0.001)]
        limiter_redis._command(b"r", checks, [c.cost for c in checks], clock.stale_after(1001.0))
        limiter_redis._outcome(REPLY, checks)
        limiter_redis._command(b"s", checks[1:], [-2.0, -0.0005])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
