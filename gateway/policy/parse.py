"""One policy's plain YAML values → a Policy, with every problem reported at its key path.

Unknown keys are errors everywhere (a typo must not silently disable a rule). Regexes and globs are compiled
here, so a bad pattern is a load error with its position, never a request-time failure.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from gateway.policy.actions import parse_actions
from gateway.policy.model import (
    COMPARISONS,
    ENDPOINTS,
    FIELDS,
    METADATA_PREFIX,
    MODES,
    NAME_PATTERN,
    OPERATORS,
    ROLES,
    AllOf,
    AnyOf,
    Condition,
    Node,
    NotOf,
    Policy,
    field_type,
)
from gateway.policy.problems import Reporter
from gateway.policy.shapes import At, has_type, is_int, is_number, is_str_list, kind, show, unknown_keys

POLICY_KEYS = ("name", "description", "priority", "mode", "match", "when", "actions")
_GLOB_CHARS = frozenset("*?[")
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer"}
_PLURALS = {str: "strings", bool: "booleans", int: "integers"}
_FIELD_LIST = ", ".join((*FIELDS, "metadata.<name>"))


def parse_policy(value: Any, path: str, reporter: Reporter) -> Policy | None:
    """The policy at `path`, or None when it has problems (all of them reported)."""
    at = At(reporter, path)
    if not isinstance(value, dict):
        at.add("", f"expected a policy (a mapping with name, match and actions), got {kind(value)}")
        return None
    before = len(reporter.problems)
    unknown_keys(value, POLICY_KEYS, "", at, "key")
    name = value.get("name")
    if name is None:
        at.add("name", "required key is missing")
    elif not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        at.add("name", f"expected a name matching [a-z0-9][a-z0-9._-]*, got {show(name)}")
    description = value.get("description", "")
    if not isinstance(description, str):
        at.add("description", f"expected a string, got {kind(description)}")
    priority = value.get("priority", 0)
    if not is_int(priority):
        at.add("priority", f"expected an integer, got {show(priority)}")
    mode = value.get("mode", "enforce")
    if mode not in MODES:
        at.add("mode", f"must be one of {', '.join(MODES)}, got {show(mode)}")
    match = _match(value["match"], at) if "match" in value else ()
    when = _node(value["when"], "when", at) if "when" in value else None
    actions = parse_actions(value.get("actions", {}), str(name), at)
    if len(reporter.problems) > before or actions is None:
        return None
    line = reporter.line(path)
    return Policy(
        name=str(name),
        actions=actions,
        description=description,
        priority=priority,
        mode=mode,
        match=match,
        when=when,
        source=reporter.source,
        line=line,
        path=path,
    )


# --- conditions --------------------------------------------------------------------------------------------------


def _match(value: Any, at: At) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        at.add("match", f"expected a mapping of field: value, got {kind(value)}")
        return ()
    out: list[Condition] = []
    for key, spec in value.items():
        rel = f"match.{key}"
        if key == "metadata":
            if not isinstance(spec, dict):
                at.add(rel, f"expected a mapping of metadata name: value, got {kind(spec)}")
                continue
            for name, item in spec.items():
                out += _field_spec(f"{METADATA_PREFIX}{name}", item, f"{rel}.{name}", at)
        elif field_type(key) is None:
            at.add(rel, f"unknown field (expected one of: {_FIELD_LIST})")
        else:
            out += _field_spec(key, spec, rel, at)
    return tuple(out)


def _field_spec(name: str, spec: Any, rel: str, at: At) -> list[Condition]:
    """`field: value` in match: a mapping of operators, or the shorthand (any-of for strings, eq otherwise)."""
    if isinstance(spec, dict):
        if not spec:
            at.add(rel, "give at least one operator")
        conditions = [_condition(name, str(op), operand, rel, f"{rel}.{op}", at) for op, operand in spec.items()]
        return [c for c in conditions if c is not None]
    tp = field_type(name)
    if tp is str:
        patterns = [spec] if isinstance(spec, str) else spec
        if not is_str_list(patterns):
            at.add(rel, f"expected a string or a list of strings, got {show(spec)}")
            return []
        op = "glob" if any(_GLOB_CHARS & set(p) for p in patterns) else "in"
        condition = _condition(name, op, patterns, rel, rel, at)
    elif tp is bool:
        condition = _condition(name, "eq", spec, rel, rel, at)
    else:
        condition = _condition(name, "in" if isinstance(spec, list) else "eq", spec, rel, rel, at)
    return [condition] if condition is not None else []


def _condition(name: str, op: str, operand: Any, path: str, where: str, at: At) -> Condition | None:
    """`name op operand`, type-checked against the field. `path` is for explain, `where` for errors."""
    tp = field_type(name)
    assert tp is not None
    if op not in OPERATORS:
        at.add(where, f"unknown operator {op!r} (expected one of: {', '.join(OPERATORS)})")
        return None
    pattern: re.Pattern[str] | None = None
    if op == "exists":
        if not isinstance(operand, bool):
            at.add(where, f"expected true or false, got {show(operand)}")
            return None
    elif op in ("eq", "ne"):
        if not has_type(operand, tp):
            at.add(where, f"expected {_TYPE_NAMES[tp]} for {name}, got {show(operand)}")
            return None
        operand = _checked_value(name, operand, where, at)
    elif op in ("in", "not_in"):
        if not isinstance(operand, list) or not operand or not all(has_type(v, tp) for v in operand):
            at.add(where, f"expected a non-empty list of {_PLURALS[tp]}, got {show(operand)}")
            return None
        operand = tuple(_checked_value(name, v, where, at) for v in operand)
    elif op in COMPARISONS:
        if tp is not int:
            at.add(where, f"operator {op} compares numbers; {name} is {_TYPE_NAMES[tp]}")
            return None
        if not is_number(operand):
            at.add(where, f"expected a number, got {show(operand)}")
            return None
    elif tp is not str:
        at.add(where, f"operator {op} applies to string fields; {name} is {_TYPE_NAMES[tp]}")
        return None
    elif op == "regex":
        if not isinstance(operand, str):
            at.add(where, f"expected a regular expression (a string), got {show(operand)}")
            return None
        try:
            pattern = re.compile(operand)
        except re.error as exc:
            at.add(where, f"bad regex {operand!r}: {exc.msg} at position {exc.pos}")
            return None
    else:  # glob
        patterns = [operand] if isinstance(operand, str) else operand
        if not is_str_list(patterns) or not patterns:
            at.add(where, f"expected a glob pattern or a list of them, got {show(operand)}")
            return None
        operand = tuple(patterns)
        # fnmatch.translate gives an anchored regex per glob; one alternation matches them all in one call.
        pattern = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    if op == "in" and isinstance(operand, list):
        operand = tuple(operand)
    return Condition(field=name, op=op, value=operand, path=path, pattern=pattern)


def _checked_value(name: str, value: Any, where: str, at: At) -> Any:
    # Endpoints and roles are closed sets: a misspelt one would silently never match.
    known = ENDPOINTS if name == "endpoint" else ROLES if name == "role" else None
    if known is not None and value not in known:
        at.add(where, f"unknown {name} {value!r} (expected one of: {', '.join(known)})")
    return value


def _node(value: Any, rel: str, at: At) -> Node | None:
    if not isinstance(value, dict):
        at.add(rel, f"expected a condition (a mapping with field, all, any or not), got {kind(value)}")
        return None
    kinds = [k for k in ("field", "all", "any", "not") if k in value]
    if len(kinds) != 1:
        at.add(rel, "give exactly one of field, all, any or not")
        return None
    form = kinds[0]
    if form == "field":
        name = value["field"]
        if not isinstance(name, str) or field_type(name) is None:
            at.add(f"{rel}.field", f"unknown field {show(name)} (expected one of: {_FIELD_LIST})")
            return None
        ops = {str(k): v for k, v in value.items() if k != "field"}
        if not ops:
            at.add(rel, f"give an operator ({', '.join(OPERATORS)})")
            return None
        conditions = [_condition(name, op, operand, rel, f"{rel}.{op}", at) for op, operand in ops.items()]
        if None in conditions:
            return None
        leaves = tuple(c for c in conditions if c is not None)
        return leaves[0] if len(leaves) == 1 else AllOf(leaves, rel)
    unknown_keys(value, (form,), rel, at, "key")
    if form == "not":
        inner = _node(value["not"], f"{rel}.not", at)
        return NotOf(inner, rel) if inner is not None else None
    items = value[form]
    if not isinstance(items, list) or not items:
        at.add(f"{rel}.{form}", f"expected a non-empty list of conditions, got {show(items)}")
        return None
    children = [_node(item, f"{rel}.{form}[{i}]", at) for i, item in enumerate(items)]
    if None in children:
        return None
    nodes = tuple(c for c in children if c is not None)
    return AllOf(nodes, rel) if form == "all" else AnyOf(nodes, rel)
