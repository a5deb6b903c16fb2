"""Fixtures for the integration tests: the gateway in front of the recording upstream, and SDK clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.runtime import Gateway
from tests.conftest import ROOT, base_config, running
from tests.integration.helpers import RawUpstream, close_sdk_clients, sdk_client
from tests.servers import serve


@pytest.fixture(autouse=True)
def _sdk_clients_closed() -> Iterator[None]:
    yield
    close_sdk_clients()


# Client-facing model name -> the upstream model (the name steers the upstream's behaviour, see tests/servers.py).
UPSTREAM_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini",  # same name: nothing to rewrite, the client's bytes go upstream as they are
    "renamed": "upstream-model-v2",
    "error-404": "error-404",
    "error-429": "error-429",
    "error-500": "error-500",
    "badjson": "badjson",
    "nousage": "nousage",
    "stream-delay-20": "stream-delay-20",
    "oddbody-503": "oddbody-503",
    "oddbody-200": "oddbody-200",
}


def upstream_overrides(url: str, provider: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides that add a provider `up` pointing at the upstream, and UPSTREAM_MODELS on it."""
    return {
        "providers": {"up": provider or {"type": "openai", "base_url": f"{url}/v1", "api_key": "sk-upstream"}},
        "models": {
            name: {"deployments": [{"provider": "up", "model": model}]} for name, model in UPSTREAM_MODELS.items()
        },
    }


@pytest.fixture
def raw_upstream() -> Iterator[tuple[str, RawUpstream]]:
    up = RawUpstream()
    with serve(up.app()) as url:
        yield url, up


@pytest.fixture
def proxied(
    make_config: Callable[..., GatewayConfig], raw_upstream: tuple[str, RawUpstream]
) -> Iterator[tuple[str, Gateway, RawUpstream]]:
    """The gateway with provider `up` (type openai, key sk-upstream) in front of the recording upstream."""
    up_url, up = raw_upstream
    with running(make_config(**upstream_overrides(up_url))) as (url, gateway):
        yield url, gateway, up


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Gateway]]:
    """One gateway with the base config for a whole module, for the many small checks that change nothing."""
    data = base_config(tmp_path_factory.mktemp("shared"))
    config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
    with running(config) as server:
        yield server


@pytest.fixture
def client(gateway_server: tuple[str, Gateway]) -> Iterator[openai.OpenAI]:
    with sdk_client(gateway_server[0]) as sdk:
        yield sdk


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite store of make_config's gateway (the same tmp_path)."""
    return tmp_path / "gateway.db"
