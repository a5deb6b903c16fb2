"""Factories, not globals: make_config(**overrides) and a gateway running on loopback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

from gateway.app import build_app
from gateway.config import GatewayConfig, parse_config
from gateway.runtime import Gateway
from gateway.server import uvicorn_options
from tests.servers import Upstream, serve

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-key"

# Property tests never fail for the machine's speed (hypothesis's default deadline is 200 ms an example: a busy core
# turned a passing example into a failure), nor for what an earlier run stored in .hypothesis.
settings.register_profile("gateway", deadline=None, database=None)
settings.load_profile("gateway")


def base_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "server": {"access_log": False, "drain_timeout_s": 5},
        "providers": {
            "mock": {"type": "mock"},
            "mockslow": {"type": "mock", "chunk_delay_ms": 30},
        },
        "models": {
            "demo": {"deployments": [{"provider": "mock", "model": "demo-1"}]},
            "demo-embedding": {"deployments": [{"provider": "mock", "model": "demo-embed"}]},
            "slow-stream": {"deployments": [{"provider": "mockslow", "model": "demo-slow"}]},
        },
        "pipeline": ["auth", "route"],
        "auth": {"mode": "keys", "keys": [{"name": "tester", "key": KEY, "project": "p1", "team": "t1"}]},
        "telemetry": {
            "store": f"sqlite:///{tmp_path / 'gateway.db'}",
            "flush_interval_ms": 20,
            "spool_dir": str(tmp_path / "spool"),
            "pricing_file": str(ROOT / "config" / "pricing.yaml"),
        },
    }


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., GatewayConfig]:
    def make(**overrides: Any) -> GatewayConfig:
        data = merge(base_config(tmp_path), overrides)
        return parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))

    return make


@contextlib.contextmanager
def running(config: GatewayConfig) -> Iterator[tuple[str, Gateway]]:
    app = build_app(config)
    with serve(app, **uvicorn_options(config.server)) as url:
        yield url, app.state.gateway


@pytest.fixture
def gateway_server(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[str, Gateway]]:
    with running(make_config()) as server:
        yield server


@pytest.fixture
def upstream() -> Iterator[tuple[str, Upstream]]:
    up = Upstream()
    with serve(up.app()) as url:
        yield url, up


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis Cluster of three masters and three replicas on loopback, for the session (tests/redis_cluster.py);
    each test starts from empty masters."""
    from tests.redis_cluster import redis_cluster as start

    with start(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
