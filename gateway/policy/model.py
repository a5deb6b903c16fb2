"""What a policy file says, as typed values: conditions, actions and the policy that holds them.

These are plain frozen data, produced by the loader and read by the evaluator; nothing here decides anything.
The vocabulary (field names, operators, checks, actions) is defined once here, and the loader, the evaluator
and `config/policy.schema.json` all follow it (a test keeps the schema in step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.decision import (
    CachePlan as CachePlan,
    Deny as Deny,
    Limit as Limit,
)  # a decision carries them too: defined in the leaf

Mode = Literal["enforce", "shadow", "off"]
MODES: tuple[Mode, ...] = ("enforce", "shadow", "off")

# The facts a condition can read, by type. `metadata.<name>` is a string field too.
STRING_FIELDS = ("model", "endpoint", "key", "key_name", "team", "project", "user", "role", "plan", "region")
BOOL_FIELDS = ("stream", "has_tools")
INT_FIELDS = ("tokens",)
FIELDS = STRING_FIELDS + BOOL_FIELDS + INT_FIELDS
METADATA_PREFIX = "metadata."

ENDPOINTS = ("chat", "completions", "embeddings", "messages")
ROLES = ("admin", "developer", "viewer", "billing")

COMPARISONS = ("gt", "gte", "lt", "lte")
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "regex", "glob", "exists")

# Guardrail checks a policy may name, what they may do, and where they run unless told.
CHECKS = ("length", "pii", "injection", "abuse", "keywords", "json_schema")
CHECK_ACTIONS: Mapping[str, tuple[str, ...]] = {
    name: ("block", "retry", "log") if name == "json_schema" else ("block", "redact", "log") for name in CHECKS
}
# Strictest first: combining policies keeps the strictest action any of them asks for.
ACTION_STRICTNESS: Mapping[str, int] = {"block": 3, "redact": 2, "retry": 2, "log": 1}
DEFAULT_STAGES: Mapping[str, str] = {
    "pii": "both",
    "keywords": "both",
    "json_schema": "output",
    "length": "input",
    "injection": "input",
    "abuse": "input",
}
STAGES = ("input", "output", "both")

ACTIONS = ("deny", "route", "rewrite", "limit", "guardrails", "tag", "cache")
BUDGET_PERIODS = ("day", "month")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def field_type(name: str) -> type | None:
    """The Python type of a fact, or None when no fact has this name."""
    if name in STRING_FIELDS or (name.startswith(METADATA_PREFIX) and len(name) > len(METADATA_PREFIX)):
        return str
    if name in BOOL_FIELDS:
        return bool
    if name in INT_FIELDS:
        return int
    return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of one fact: `field op value`. `path` is where the file wrote it, for explanations."""

    field: str
    op: str
    value: Any  # the operand as written: a string, number, bool or tuple of them
    path: str
    # `regex` and `glob` operands, compiled once by the loader (a bad regex is a load error, not a request error).
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Node, ...]
    path: str


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Node, ...]
    path: str


@dataclass(frozen=True, slots=True)
class NotOf:
    item: Node
    path: str


Node = Condition | AllOf | AnyOf | NotOf


@dataclass(frozen=True, slots=True)
class Route:
    model: str | None = None
    regions: frozenset[str] | None = None  # None: no constraint (an empty set is rejected by the loader)
    providers: frozenset[str] | None = None
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rewrite:
    max_tokens: int | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    strip: frozenset[str] = frozenset()
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Guardrail:
    """One check a policy asks for. `settings` holds everything but action and stage, for the check to read."""

    name: str
    action: str
    stages: frozenset[str]
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Actions:
    deny: Deny | None = None
    route: Route | None = None
    rewrite: Rewrite | None = None
    limit: Limit | None = None
    guardrails: tuple[Guardrail, ...] = ()
    tag: Mapping[str, str] = field(default_factory=dict)
    cache: CachePlan | None = None

    def to_dict(self) -> dict[str, Any]:
        """The actions as the file could have written them (sets sorted): shadow records and explain show this."""
        out: dict[str, Any] = {}
        if self.deny is not None:
            out["deny"] = {"status": self.deny.status, "code": self.deny.code, "message": self.deny.message}
        if self.route is not None:
            route: dict[str, Any] = {}
            if self.route.model is not None:
                route["model"] = self.route.model
            for name in ("regions", "providers", "tags"):
                values = getattr(self.route, name)
                if values:
                    route[name] = sorted(values)
            out["route"] = route
        if self.rewrite is not None:
            rewrite: dict[str, Any] = {}
            if self.rewrite.max_tokens is not None:
                rewrite["max_tokens"] = self.rewrite.max_tokens
            if self.rewrite.set:
                rewrite["set"] = dict(self.rewrite.set)
            if self.rewrite.strip:
                rewrite["strip"] = sorted(self.rewrite.strip)
            if self.rewrite.system is not None:
                rewrite["system"] = self.rewrite.system
            out["rewrite"] = rewrite
        if self.limit is not None:
            out["limit"] = {k: v for k, v in self.limit.items() if v is not None}
        if self.guardrails:
            out["guardrails"] = {
                g.name: {"action": g.action, "stages": sorted(g.stages), **g.settings} for g in self.guardrails
            }
        if self.tag:
            out["tag"] = dict(self.tag)
        if self.cache is not None:
            out["cache"] = self.cache.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    actions: Actions = field(default_factory=Actions)
    description: str = ""
    priority: int = 0
    mode: Mode = "enforce"
    # `match:` as a flat AND of conditions, and `when:` as a tree; both must hold.
    match: tuple[Condition, ...] = ()
    when: Node | None = None
    # Where it was written: file (or "api:<name>"), line and key path, for duplicate names and explanations.
    source: str = ""
    line: int | None = None
    path: str = ""

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source

    def fields(self) -> frozenset[str]:
        """Every fact the policy's conditions read."""
        names = {c.field for c in self.match}
        stack: list[Node] = [self.when] if self.when is not None else []
        while stack:
            node = stack.pop()
            if isinstance(node, Condition):
                names.add(node.field)
            elif isinstance(node, NotOf):
                stack.append(node.item)
            else:
                stack.extend(node.items)
        return frozenset(names)
