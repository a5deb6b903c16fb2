"""Conditions → closures, built once per PolicySet: a test for the fast path and a `why` for explanations.

`test(facts)` builds nothing (no strings, no lists); `why(facts)` is called only by explain, only after the
same `test` failed, and says which field failed and how: `match.plan: "pro" is not one of ["free"]`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.policy.facts import Facts
from gateway.policy.model import AllOf, AnyOf, Condition, Node, NotOf, Policy

Test = Callable[[Facts], bool]
Why = Callable[[Facts], str]

_COMPARE: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "gt": (operator.gt, ">"),
    "gte": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "lte": (operator.le, "<="),
}
_ABSENT = (None, "")
# Cheap checks run first, so that a policy that does not apply is usually dismissed by a set lookup.
_COST = {"glob": 1, "regex": 2}
_FIELD_COST = {"tokens": 3}  # reading tokens may count them: after every other field


@dataclass(frozen=True, slots=True)
class Check:
    test: Test
    why: Why
    cost: int


def compile_policy(policy: Policy) -> tuple[Check, ...]:
    """The policy's checks in evaluation order: `match` fields cheapest first, then the `when` tree."""
    checks = [compile_node(c) for c in policy.match]
    if policy.when is not None:
        checks.append(compile_node(policy.when))
    return tuple(sorted(checks, key=lambda c: c.cost))  # stable: equal costs keep the file's order


def compile_node(node: Node) -> Check:
    if isinstance(node, Condition):
        return Check(_test(node), _why(node), max(_COST.get(node.op, 0), _FIELD_COST.get(node.field, 0)))
    if isinstance(node, NotOf):
        return _not(node)
    children = tuple(compile_node(item) for item in node.items)
    cost = 1 + max(c.cost for c in children)
    tests = tuple(c.test for c in children)
    path = node.path
    if isinstance(node, AllOf):
        # Plain loops, not all()/any() over a generator: this is the per-request path and they are ~2x faster.
        def all_test(facts: Facts) -> bool:
            for test in tests:  # noqa: SIM110
                if not test(facts):
                    return False
            return True

        def all_why(facts: Facts) -> str:
            return next(c.why(facts) for c in children if not c.test(facts))

        return Check(all_test, all_why, cost)
    assert isinstance(node, AnyOf)

    def any_test(facts: Facts) -> bool:
        for test in tests:  # noqa: SIM110
            if test(facts):
                return True
        return False

    def any_why(facts: Facts) -> str:
        reasons = "; ".join(c.why(facts) for c in children)
        return f"{path}: none of the {len(children)} alternatives holds ({reasons})"

    return Check(any_test, any_why, cost)


def _not(node: NotOf) -> Check:
    inner = compile_node(node.item)
    inner_test = inner.test
    item = node.item
    held = f"{item.field} is" if isinstance(item, Condition) else ""
    get = _getter(item.field) if isinstance(item, Condition) else None

    def why(facts: Facts) -> str:
        detail = f" ({held} {_show(get(facts))})" if get is not None else ""
        return f"{node.path}: the negated condition holds{detail}"

    return Check(lambda facts: not inner_test(facts), why, inner.cost + 1)


def _getter(name: str) -> Callable[[Facts], Any]:
    if name.startswith("metadata."):
        key = name[len("metadata.") :]
        return lambda facts: facts.metadata.get(key)
    if name == "tokens":
        return Facts.prompt_tokens  # counted on first read
    return operator.attrgetter(name)


def _test(c: Condition) -> Test:
    get = _getter(c.field)
    value = c.value
    if c.op == "in":
        values = frozenset(value)
        return lambda facts: get(facts) in values
    if c.op == "not_in":
        excluded = frozenset(value)
        return lambda facts: get(facts) not in excluded
    if c.op == "eq":
        return lambda facts: get(facts) == value
    if c.op == "ne":
        return lambda facts: get(facts) != value
    if c.op in _COMPARE:
        compare = _COMPARE[c.op][0]
        return lambda facts: compare(get(facts), value)
    if c.op == "exists":
        return lambda facts: (get(facts) not in _ABSENT) is value
    assert c.pattern is not None
    # regex finds anywhere (anchor it with ^ and $); a glob matches the whole value (fnmatch.translate anchors it).
    find = c.pattern.search if c.op == "regex" else c.pattern.match

    def pattern_test(facts: Facts) -> bool:
        actual = get(facts)
        return actual is not None and find(actual) is not None

    return pattern_test


def _why(c: Condition) -> Why:
    get = _getter(c.field)
    head = f"{c.path}:" if c.path.endswith(c.field) else f"{c.path}: {c.field}"
    value = c.value
    if c.op == "in":
        phrase = f"is not one of {_show(value)}"
    elif c.op == "not_in":
        phrase = f"is one of {_show(value)}"
    elif c.op == "eq":
        phrase = f"is not {_show(value)}"
    elif c.op == "ne":
        phrase = f"is {_show(value)}"
    elif c.op in _COMPARE:
        phrase = f"is not {_COMPARE[c.op][1]} {_show(value)}"
    elif c.op == "exists":
        phrase = "is absent" if value else "is present"
    elif c.op == "regex":
        phrase = f"does not match regex {_show(value)}"
    else:
        phrase = f"matches none of {_show(list(value))}"
    return lambda facts: f"{head} {_show(get(facts))} {phrase}"


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    return orjson.dumps(value).decode()
