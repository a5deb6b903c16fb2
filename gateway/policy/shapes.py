"""Small shape checks shared by the policy parsers: each reports a problem at a key path and says whether the
value was fine. Messages describe what was expected and what was found (`expected a list of strings, got 'eu'`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.policy.problems import Reporter


class At:
    """A reporter for one policy: paths are given relative to the policy (`match.plan`), as explain shows them."""

    def __init__(self, reporter: Reporter, base: str) -> None:
        self.reporter = reporter
        self.base = base

    def add(self, rel: str, message: str) -> None:
        self.reporter.add(f"{self.base}.{rel}" if rel else self.base, message)


def mapping(value: Any, rel: str, keys: Sequence[str], at: At, nonempty: bool = False) -> bool:
    if not isinstance(value, dict):
        at.add(rel, f"expected a mapping ({', '.join(keys)}), got {kind(value)}")
        return False
    if nonempty and not value:
        at.add(rel, f"sets nothing (give one of: {', '.join(keys)})")
        return False
    return unknown_keys(value, keys, rel, at, "key")


def unknown_keys(value: dict[Any, Any], known: Sequence[str], rel: str, at: At, what: str) -> bool:
    unknown = [k for k in value if k not in known]
    for key in unknown:
        at.add(f"{rel}.{key}" if rel else str(key), f"unknown {what} (expected one of: {', '.join(known)})")
    return not unknown


def optional(value: Any, rel: str, at: At, check: Callable[[Any], bool], expected: str) -> bool:
    if value is None or check(value):
        return True
    at.add(rel, f"expected {expected}, got {show(value)}")
    return False


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def has_type(value: Any, tp: type) -> bool:
    return is_int(value) if tp is int else isinstance(value, tp)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return False


def kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return "nothing (null)" if value is None else names.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    if isinstance(value, dict | list):
        return kind(value)
    text = "null" if value is None else repr(value) if isinstance(value, str) else str(value).lower()
    return text if len(text) <= 60 else text[:57] + "..."
