"""Small builders for the policy tests: policies from YAML text or from plain dicts."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from gateway.policy import Facts, PolicyError, PolicySet, parse_policies


def policy_set(text: str) -> PolicySet:
    return PolicySet(parse_policies(textwrap.dedent(text), "test.yaml"))


def of(*policies: dict[str, Any]) -> PolicySet:
    """A PolicySet from policy dicts; a policy without actions gets a tag so it does something."""
    return PolicySet(parse_policies(yaml.safe_dump({"policies": list(policies)}, sort_keys=False), "test.yaml"))


def problems(text: str, source: str = "test.yaml") -> list[str]:
    try:
        parse_policies(textwrap.dedent(text), source)
    except PolicyError as exc:
        return exc.lines()
    raise AssertionError("expected a PolicyError")


def matches(match: dict[str, Any] | None = None, when: dict[str, Any] | None = None, **facts: Any) -> bool:
    """Whether a single policy with this match/when matches these facts."""
    policy: dict[str, Any] = {"name": "p", "actions": {"tag": {"hit": "yes"}}}
    if match is not None:
        policy["match"] = match
    if when is not None:
        policy["when"] = when
    return of(policy).evaluate(Facts(**facts)).matched == ("p",)
