"""limits.rules that can never apply are an error at `gateway check` and at start; ones that may match only what
the config does not list (virtual keys, JWT users) are a warning."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.filters.ratelimit_rules import rule_problems
from gateway.identity.keys import config_key_id

KEYS = [
    {"name": "alpha", "key": "sk-alpha", "project": "p1", "team": "t1", "user": "ann"},
    {"name": "beta", "key_sha256": hashlib.sha256(b"sk-beta").hexdigest(), "project": "p2"},
]


def config(*rules: dict[str, Any], store: str = "none", **overrides: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "providers": {"mock": {"type": "mock"}},
        "models": {"demo": {"deployments": [{"provider": "mock", "model": "m"}]},
                   "mock/*": {"deployments": [{"provider": "mock", "model": "*"}]}},
        "pipeline": ["auth", "ratelimit", "route"],
        "auth": {"mode": "keys", "keys": KEYS, "admin_key": "sk-admin"},
        "telemetry": {"store": store},
        "limits": {"rules": [{"rpm": 5, **rule} for rule in rules]},
        **overrides,
    }  # fmt: skip
    return parse_config(yaml.safe_dump(data))


def paths(problems: list[tuple[str, str]]) -> list[str]:
    return [path for path, _ in problems]


@pytest.mark.parametrize(
    "rule",
    [
        {"scope": "key", "match": "alpha"},
        {"scope": "key", "match": "beta"},  # a key given by its digest has a name like any other
        {"scope": "key", "match": config_key_id("beta")},
        {"scope": "key", "match": "admin"},
        {"scope": "key"},
        {"scope": "project", "match": "p2"},
        {"scope": "team", "match": "t1"},
        {"scope": "user", "match": "ann"},
        {"scope": "model", "match": "demo"},
        {"scope": "model", "match": "mock/any-model"},  # served by the wildcard group
        {"scope": "ip", "match": "10.1.2.3"},
        {"scope": "ip", "match": "2001:db8::1"},
        {"scope": "global"},
    ],
)
def test_a_rule_that_can_match_passes_quietly(rule: dict[str, Any]) -> None:
    assert rule_problems(config(rule)) == ([], [])


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"scope": "key", "match": "alhpa"}, "config keys: 'alpha', 'beta'"),
        ({"scope": "key", "match": hashlib.sha256(b"sk-alpha").hexdigest()[:12]}, "match its name, 'alpha'"),
        ({"scope": "key", "match": hashlib.sha256(b"sk-beta").hexdigest()[:12]}, "match its name, 'beta'"),
        ({"scope": "project", "match": "p3"}, "no key has the project 'p3'"),
        ({"scope": "team", "match": "t2"}, "no key has the team 't2'"),
        ({"scope": "user", "match": "bob"}, "no key has the user 'bob'"),
        ({"scope": "model", "match": "gpt-4o"}, "no model 'gpt-4o'"),
        ({"scope": "ip", "match": "localhost"}, "not an IP address"),
        ({"scope": "ip", "match": "2001:DB8:0::1"}, "write 2001:db8::1"),
        ({"scope": "global", "match": "*"}, "match never applies"),
    ],
)
def test_a_rule_that_nothing_can_match_is_an_error(rule: dict[str, Any], says: str) -> None:
    errors, warnings = rule_problems(config(rule))
    assert paths(errors) == ["limits.rules[0].match"]
    assert says in errors[0][1]
    assert warnings == []


def test_a_key_rule_while_everyone_is_anonymous_is_an_error() -> None:
    errors, _ = rule_problems(config({"scope": "key", "match": "alpha"}, pipeline=["ratelimit", "route"]))
    assert "every caller is anonymous" in errors[0][1]


def test_an_unknown_key_is_a_warning_when_virtual_keys_or_jwts_may_carry_it(tmp_path: Path) -> None:
    rule = {"scope": "key", "match": "vk-bot"}
    errors, warnings = rule_problems(config(rule, store=f"sqlite:///{tmp_path / 'g.db'}"))
    assert errors == []
    assert paths(warnings) == ["limits.rules[0].match"]
    assert "virtual key" in warnings[0][1]
    jwt = {"mode": "keys", "keys": KEYS, "jwt": {"hs256_secret": "x" * 32}}
    errors, warnings = rule_problems(config(rule, auth=jwt))
    assert (errors, paths(warnings)) == ([], ["limits.rules[0].match"])
    # A project only virtual keys carry is normal: no warning for it.
    assert rule_problems(config({"scope": "project", "match": "p9"}, auth=jwt)) == ([], [])
    # The old hash-prefix id stays an error: it is a config key's, and no longer its id.
    old = hashlib.sha256(b"sk-alpha").hexdigest()[:12]
    errors, _ = rule_problems(config({"scope": "key", "match": old}, auth=jwt))
    assert paths(errors) == ["limits.rules[0].match"]


def test_rules_without_the_ratelimit_filter_are_a_warning() -> None:
    errors, warnings = rule_problems(config({"scope": "key"}, pipeline=["auth", "route"]))
    assert (errors, paths(warnings)) == ([], ["limits.rules"])


def test_gateway_check_fails_on_an_error_and_prints_a_warning(tmp_path: Path) -> None:
    def check(rule: dict[str, Any], store: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "g.yaml"
        data = {
            "providers": {"mock": {"type": "mock"}},
            "models": {"demo": {"deployments": [{"provider": "mock", "model": "m"}]}},
            "pipeline": ["auth", "ratelimit", "route"],
            "auth": {"keys": [{"name": "alpha", "key": "sk-alpha"}]},
            "telemetry": {"store": store},
            "limits": {"rules": [{"rpm": 5, **rule}]},
        }
        path.write_text(yaml.safe_dump(data))
        return subprocess.run(
            [sys.executable, "-m", "gateway", "check", "--config", str(path)], capture_output=True, text=True
        )

    failed = check({"scope": "key", "match": "alhpa"}, "none")
    assert failed.returncode == 2
    assert "limits.rules[0].match: no key is named 'alhpa'" in failed.stderr
    warned = check({"scope": "key", "match": "alhpa"}, f"sqlite:///{tmp_path / 'g.db'}")
    assert warned.returncode == 0, warned.stderr
    assert "warning: " in warned.stderr
    assert "limits.rules[0].match" in warned.stderr
    assert check({"scope": "key", "match": "alpha"}, "none").stderr == ""


def test_config_key_names_are_unique_and_set() -> None:
    from gateway.config import ConfigError

    for keys in ([{"name": "a", "key": "sk-1"}, {"name": "a", "key": "sk-2"}], [{"name": "", "key": "sk-1"}]):
        with pytest.raises(ConfigError) as caught:
            parse_config(yaml.safe_dump({"auth": {"keys": keys}}))
        assert [p for p, _ in caught.value] == [f"auth.keys[{len(keys) - 1}].name"]
