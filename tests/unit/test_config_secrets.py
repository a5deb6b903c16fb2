"""Secrets in the config never show: not in a repr (of the whole config or any part of it, as a log line, a
debugger or a failing assertion prints it), not in a problem's message. Secrets are credentials (keys, secrets,
passwords, tokens), headers (Authorization, api-key) and URLs that may carry a password (a store, a Redis backend,
a webhook); every field named so is checked, so that a field added later is too."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from gateway.config import ConfigError, GatewayConfig, parse_config

SECRET_NAMES = ("key", "secret", "password", "token", "headers")
URL_NAMES = ("url", "store", "backend", "redis_url", "dsn")
NOT_SECRET = {"base_url", "jwks_url", "data_plane_url", "public_key", "tiktoken_cache_dir"}  # no credential there
SENTINEL = "s3ntinel-VALUE"


def _fields(tp: type, seen: set[type]) -> typing.Iterator[tuple[type, dataclasses.Field[Any], Any]]:
    if tp in seen:
        return
    seen.add(tp)
    hints = typing.get_type_hints(tp)
    for field in dataclasses.fields(tp):
        hint = hints[field.name]
        yield tp, field, hint
        inner = [hint, *typing.get_args(hint)]
        inner += [a for arg in typing.get_args(hint) for a in typing.get_args(arg)]
        for candidate in inner:
            if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
                yield from _fields(candidate, seen)


def _credential(name: str, hint: Any) -> bool:
    if name in NOT_SECRET or hint not in (str, dict[str, str]):
        return False
    return any(word in name for word in SECRET_NAMES) or name in URL_NAMES or name.endswith("_url")


def test_every_credential_field_of_the_config_is_left_out_of_reprs() -> None:
    shown = [
        f"{owner.__name__}.{field.name}"
        for owner, field, hint in _fields(GatewayConfig, set())
        if _credential(field.name, hint) and field.repr
    ]
    assert shown == []


def test_a_config_full_of_secrets_has_none_in_its_repr() -> None:
    yaml = f"""
providers:
  up: {{type: openai, base_url: 'https://api.test/v1', api_key: {SENTINEL}-1, headers: {{api-key: {SENTINEL}-2}}}}
models: {{m: {{deployments: [{{provider: up, model: m}}]}}}}
auth:
  mode: keys
  admin_key: {SENTINEL}-3
  keys: [{{name: a, key: {SENTINEL}-4, project: p}}]
state: {{backend: 'redis://:{SENTINEL}-5@127.0.0.1:6379/0'}}
limits: {{backend: 'redis://:{SENTINEL}-6@127.0.0.1:6379/0'}}
telemetry:
  store: 'postgresql://u:{SENTINEL}-7@127.0.0.1:5432/db'
  sinks:
    rs: {{type: webhook, data_plane_url: 'https://dp.test', write_key: {SENTINEL}-8}}
    hook: {{type: webhook, url: 'https://hooks.test/{SENTINEL}-9', headers: {{Authorization: 'Bearer {SENTINEL}-10'}}}}
    lf: {{type: langfuse, url: 'https://lf.test', public_key: pk, secret_key: {SENTINEL}-11}}
"""
    config = parse_config(yaml)
    assert SENTINEL not in repr(config)


@pytest.mark.parametrize(
    "yaml",
    [
        "telemetry: {sinks: {h: {type: webhook, url: 'https://h.test', headers: {x: [SECRET]}}}}",
        "telemetry: {sinks: {h: {type: webhook, url: 'https://h.test', headers: {Authorization: 1}}}}",
        "telemetry: {store: [postgresql://u:SECRET@h/db]}",
        "state: {backend: {url: 'redis://:SECRET@h'}}",
        "providers: {up: {type: openai, headers: {api-key: [SECRET]}}}",
        "telemetry: {sinks: {h: {type: webhook, url: [SECRET]}}}",
    ],
)
def test_a_problem_never_shows_a_secret_value(yaml: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.replace("SECRET", SENTINEL).replace("Authorization: 1", f"Authorization: {{a: {SENTINEL}}}"))
    assert SENTINEL not in str(err.value)
    assert "(hidden)" in str(err.value)
