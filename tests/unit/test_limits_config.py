"""limits: and server.trusted_proxies are checked at load, with the key path of each problem."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [path for path, _ in caught.value]


def test_limits_parse_with_defaults() -> None:
    config = parse_config("limits: {rules: [{scope: key, rpm: 60}]}\nserver: {trusted_proxies: [10.0.0.0/8]}")
    assert config.limits.algorithm == "token-bucket"
    assert config.limits.fail == "open"
    assert config.limits.rules[0].rpm == 60
    assert config.server.trusted_proxies == ["10.0.0.0/8"]


def test_bad_limits_name_their_key() -> None:
    text = """
limits:
  backend: memcached://x
  rules:
    - {scope: model, budget_usd: 5}
    - {scope: key}
server: {trusted_proxies: [not-an-ip]}
"""
    assert problems(text) == [
        "limits.backend",
        "limits.rules[0].budget_usd",
        "limits.rules[1]",
        "server.trusted_proxies[0]",
    ]
