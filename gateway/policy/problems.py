"""Load-time problems: each names its file, line and key path, and PolicyError carries all of them at once.

    policies/eu.yaml:12: policies[0].actions.route.regions: expected a list of strings

Like ConfigError, a PolicyError never reaches a client: a bad file is refused when it is checked or (re)loaded,
and the policies already in force stay in force.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from gateway.policy.model import Policy


@dataclass(frozen=True, slots=True)
class Problem:
    source: str  # a file path, or "api:<name>" for a policy sent to the admin API
    line: int | None  # 1-based
    key_path: str  # policies[0].actions.route.regions
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.key_path}: {self.message}" if self.key_path else f"{where}: {self.message}"


class PolicyError(Exception):
    """Policies that cannot be loaded, with every problem found (loading never stops at the first)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)


_LAST_STEP = re.compile(r"(\[\d+\]|\.[^.\[\]]*)$")


class Reporter:
    """Collects problems for one source, finding each key path's line (or its nearest parent's)."""

    def __init__(self, source: str, lines: Mapping[str, int] | None = None) -> None:
        self.source = source
        self.lines: Mapping[str, int] = lines if lines is not None else {}
        self.problems: list[Problem] = []

    def add(self, key_path: str, message: str) -> None:
        self.problems.append(Problem(self.source, self.line(key_path), key_path, message))

    def line(self, key_path: str) -> int | None:
        path = key_path
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            shorter = _LAST_STEP.sub("", path)
            path = shorter if shorter != path else ""


def duplicate_problems(policies: Iterable[Policy]) -> list[Problem]:
    """One problem per policy whose name an earlier one already has, naming both places."""
    first: dict[str, Policy] = {}
    problems: list[Problem] = []
    for policy in policies:
        seen = first.setdefault(policy.name, policy)
        if seen is not policy:
            where = f"{seen.location} ({seen.path})" if seen.path else seen.location
            problems.append(
                Problem(
                    policy.source,
                    policy.line,
                    f"{policy.path}.name" if policy.path else "name",
                    f"duplicate policy name {policy.name!r}: also defined at {where}",
                )
            )
    return problems
