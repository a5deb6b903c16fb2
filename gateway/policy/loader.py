"""Policy files → a PolicySet, or a PolicyError naming every problem by file, line and key path.

A file holds `policies: [...]` or is itself that list. Other top-level keys must start with `x-` (as in
docker-compose): they are ignored, a place for YAML anchors that policies merge with `<<: *name`. A directory
contributes its `*.yaml` and `*.yml` files (not its subdirectories, so `policies/tests/` is left to the test
runner), in name order.

Line numbers come from YAML's composed node tree (each node has its start mark): the document is turned into
plain values by hand, recording the line of every key path on the way. That also lets the loader refuse
duplicate keys, which PyYAML would silently resolve to the last one, and read booleans as YAML 1.2 (and editors)
do: only true and false, so `mode: off` is the string "off", not YAML 1.1's false.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gateway.policy.evaluate import PolicySet
from gateway.policy.model import Policy
from gateway.policy.parse import parse_policy
from gateway.policy.problems import PolicyError, Problem, Reporter, duplicate_problems

# The C loader composes about ten times faster than the pure-Python one; both are `safe`.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_DEPTH = 64


def load_policies(paths: Sequence[str | Path]) -> PolicySet:
    """Every policy in these files and directories, compiled. Raises PolicyError listing all problems."""
    problems: list[Problem] = []
    files = policy_files(paths, problems)
    policies: list[Policy] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(file), None, "", f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
            continue
        reporter = Reporter(str(file))
        policies += _parse(text, reporter)
        problems += _in_line_order(reporter.problems)
    problems += duplicate_problems(policies)
    if problems:
        raise PolicyError(problems)
    return PolicySet(policies, files=tuple(str(f) for f in files))


def parse_policies(text: str, source: str) -> list[Policy]:
    """The policies in one YAML text (a policy sent to the admin API: source "api:<name>")."""
    reporter = Reporter(source)
    policies = _parse(text, reporter)
    problems = _in_line_order(reporter.problems) + duplicate_problems(policies)
    if problems:
        raise PolicyError(problems)
    return policies


def policy_files(paths: Sequence[str | Path], problems: list[Problem]) -> list[Path]:
    """The files these paths name, each once; a missing path is a problem."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, "", "no such file or directory"))
    seen: set[Path] = set()
    unique = []
    for file in files:
        if file.resolve() not in seen:
            seen.add(file.resolve())
            unique.append(file)
    return unique


def _in_line_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.line or 0)  # stable: one line's problems keep their order


def _parse(text: str, reporter: Reporter) -> list[Policy]:
    data = read_yaml(text, reporter)
    if data is None:
        return []
    if isinstance(data, dict):
        for key in data:
            if key != "policies" and not key.startswith("x-"):
                reporter.add(str(key), "unknown key (expected: policies, or x-<name> to hold YAML anchors)")
        items = data.get("policies", [])
        if items is None:
            return []
    else:
        items = data
    if not isinstance(items, list):
        reporter.add("policies", "expected a list of policies")
        return []
    policies = [parse_policy(item, f"policies[{i}]", reporter) for i, item in enumerate(items)]
    return [p for p in policies if p is not None]


def read_yaml(text: str, reporter: Reporter, list_key: str = "policies") -> Any:
    """The document as plain values, with each key path's line recorded in `reporter.lines`.

    Problems (a syntax error, a duplicate key, an unknown tag) are reported; the value is then None or partial.
    Paths read like `policies[0].match.model`; a top-level list's items are `<list_key>[i]` too, so both file
    shapes give the same paths.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        reporter.problems.append(
            Problem(reporter.source, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}")
        )
        return None
    if node is None:
        return None
    lines: dict[str, int] = {}
    reporter.lines = lines
    root = list_key if isinstance(node, yaml.SequenceNode) else ""
    return _Builder(reporter, lines).value(node, root, 0)


class _Builder:
    def __init__(self, reporter: Reporter, lines: dict[str, int]) -> None:
        self.reporter = reporter
        self.lines = lines
        self.constructor = yaml.constructor.SafeConstructor()
        self.open: set[int] = set()  # the nodes being built: meeting one again is an alias cycle

    def value(self, node: yaml.Node, path: str, depth: int) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.open or depth > _MAX_DEPTH:
            self.reporter.add(path, "an alias refers to a node that contains it")
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, path, depth)
        finally:
            self.open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: str) -> Any:
        if node.tag == _BOOL_TAG and not node.style and node.value.lower() not in ("true", "false"):
            return node.value  # `mode: off`, `region: no`: YAML 1.2 reads these as the strings they look like
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            self.reporter.add(path, f"invalid value: {getattr(exc, 'problem', None) or exc}")
            return None

    def mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # `<<: *base` merges first, so that the mapping's own keys (and their lines) override what it merges.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in reversed(sources):  # the first source listed wins, as in PyYAML
                    merged = self.value(source, path, depth + 1)
                    if isinstance(merged, dict):
                        out.update(merged)
                    else:
                        self.reporter.add(path, "a merge (<<) takes a mapping or a list of mappings")
        own: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.reporter.problems.append(Problem(self.reporter.source, line, path, "a key must be a plain string"))
                continue
            # The key's own text: `on:` or `1:` stay the strings a reader sees, not YAML 1.1's bool or int.
            key = str(key_node.value)
            key_path = f"{path}.{key}" if path else key
            if key in own:
                problem = f"duplicate key (first at line {own[key]})"
                self.reporter.problems.append(Problem(self.reporter.source, line, key_path, problem))
                continue
            own[key] = self.lines[key_path] = line
            out[key] = self.value(value_node, key_path, depth + 1)
        return out
