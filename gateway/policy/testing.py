"""Policy tests: YAML cases that give a request and the decision the policies must reach for it.

    cases:
      - name: free plan is sent to the small model
        request: {model: gpt-4o, messages: [{role: user, content: hi}]}   # `endpoint:` too (default chat)
        principal: {name: alice, team: web, metadata: {plan: free}}
        metadata: {customer: acme-1}        # request metadata, as x-gateway-metadata-* headers give it
        tokens: 5000                        # the prompt's tokens; default: len(prompt text) // 4
        expect: {decision: allow, model: gpt-4o-mini, guardrails: {pii: redact}}

Only the keys present in `expect` are compared. `model` is the model the request would be served with (the
policy's route.model, else the one asked for); `max_tokens` is the body's value after the rewrite; `regions`,
`providers`, `tags`, `matched` and `shadow` compare as sorted lists; `guardrails` maps every check to its action
and `labels` every label to its value, both compared whole.

Tokens are estimated as len(text) // 4 (about four characters a token in English) rather than with tiktoken,
so that `gateway policy test` runs anywhere, offline, in milliseconds. Give `tokens:` to test a threshold exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.context import Principal
from gateway.policy.decision import Decision
from gateway.policy.evaluate import PolicySet
from gateway.policy.facts import Facts, request_metadata
from gateway.policy.loader import load_policies, policy_files, read_yaml
from gateway.policy.model import ENDPOINTS
from gateway.policy.problems import PolicyError, Problem, Reporter
from gateway.policy.rewrite import apply_rewrite

CASE_KEYS = ("name", "description", "request", "principal", "metadata", "tokens", "expect")
PRINCIPAL_KEYS = ("name", "key", "team", "project", "user", "role", "metadata")
EXPECT_KEYS = (
    "decision", "status", "code", "model", "regions", "providers", "tags", "max_tokens", "guardrails", "labels",
    "matched", "shadow",
)  # fmt: skip
_SORTED = ("regions", "providers", "tags", "matched", "shadow")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    request: Mapping[str, Any]
    expect: Mapping[str, Any]
    endpoint: str = "chat"
    principal: Principal = field(default_factory=lambda: Principal(name="test"))
    metadata: Mapping[str, str] = field(default_factory=dict)
    tokens: int | None = None
    location: str = ""


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision
    diffs: tuple[str, ...]  # one line per expectation not met: `model: expected "a", got "b"`

    @property
    def passed(self) -> bool:
        return not self.diffs


def run_tests(policy_paths: Sequence[str | Path], test_paths: Sequence[str | Path]) -> list[CaseResult]:
    """Load the policies and the cases (PolicyError for problems in either), and run every case."""
    return run_cases(load_policies(policy_paths), load_cases(test_paths))


def run_cases(policies: PolicySet, cases: Sequence[Case]) -> list[CaseResult]:
    results = []
    for case in cases:
        tokens = case.tokens if case.tokens is not None else estimate_tokens(case.request)
        metadata = {**request_metadata(case.request), **case.metadata}  # as headers, the case's own win
        facts = Facts.from_request(case.request, case.endpoint, case.principal, tokens, metadata)
        decision = policies.evaluate(facts)
        seen = observed(case, decision)
        diffs = []
        for key, expected in case.expect.items():
            want = sorted(expected) if key in _SORTED and isinstance(expected, list) else expected
            if seen[key] != want:
                diffs.append(f"{key}: expected {_json(want)}, got {_json(seen[key])}")
        results.append(CaseResult(case, decision, tuple(diffs)))
    return results


def observed(case: Case, decision: Decision) -> dict[str, Any]:
    """Every value an `expect` can state, as this decision gives it for this case."""
    body = copy.deepcopy(dict(case.request))
    apply_rewrite(body, decision, case.endpoint)
    deny = decision.deny
    return {
        "decision": "deny" if deny is not None else "allow",
        "status": deny.status if deny is not None else None,
        "code": deny.code if deny is not None else None,
        "model": decision.model if decision.model is not None else case.request.get("model"),
        "regions": sorted(decision.regions) if decision.regions is not None else None,
        "providers": sorted(decision.providers) if decision.providers is not None else None,
        "tags": sorted(decision.tags),
        "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
        "guardrails": {name: spec.action for name, spec in decision.guardrails.items()},
        "labels": dict(decision.labels),
        "matched": sorted(decision.matched),
        "shadow": sorted(s.policy for s in decision.shadow),
    }


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """len(text) // 4 over the messages' text, the prompt and the input: a network-free estimate."""
    parts: list[str] = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    for name in ("prompt", "input"):
        value = body.get(name)
        parts += [value] if isinstance(value, str) else [v for v in value or () if isinstance(v, str)]
    return sum(len(p) for p in parts) // 4


def load_cases(paths: Sequence[str | Path]) -> list[Case]:
    """The cases in these files and directories. Raises PolicyError naming every problem by file and line."""
    problems: list[Problem] = []
    cases: list[Case] = []
    for file in policy_files(paths, problems):
        reporter = Reporter(str(file))
        try:
            data = read_yaml(file.read_text(encoding="utf-8"), reporter, "cases")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(file), None, "", f"cannot read: {exc}"))
            continue
        if isinstance(data, dict):
            for key in data:
                if key != "cases":
                    reporter.add(str(key), "unknown key (expected: cases)")
            data = data.get("cases")
        if not isinstance(data, list):
            reporter.add("cases", "expected a list of cases")
            data = []
        names: set[str] = set()
        for i, item in enumerate(data):
            case = _case(item, f"cases[{i}]", reporter)
            if case is not None:
                if case.name in names:
                    reporter.add(f"cases[{i}].name", f"duplicate case name {case.name!r}")
                names.add(case.name)
                cases.append(case)
        problems += reporter.problems
    if problems:
        raise PolicyError(problems)
    return cases


def _case(item: Any, path: str, r: Reporter) -> Case | None:
    if not isinstance(item, dict):
        r.add(path, "expected a case (a mapping with name, request and expect)")
        return None
    before = len(r.problems)
    _keys(item, CASE_KEYS, path, r)
    for key in ("name", "request", "expect"):
        if key not in item:
            r.add(f"{path}.{key}", "required key is missing")
    name = item.get("name")
    if "name" in item and (not isinstance(name, str) or not name):
        r.add(f"{path}.name", "expected a non-empty string")
    request = item.get("request", {})
    endpoint = "chat"
    if not isinstance(request, dict):
        r.add(f"{path}.request", "expected a mapping (the request body)")
    else:
        request = dict(request)
        endpoint = request.pop("endpoint", "chat")
        if endpoint not in ENDPOINTS:
            r.add(f"{path}.request.endpoint", f"must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    principal = parse_principal(item.get("principal", {}), f"{path}.principal", r)
    metadata = item.get("metadata", {})
    if not _str_map(metadata):
        r.add(f"{path}.metadata", "expected a mapping of name: string")
    tokens = item.get("tokens")
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0):
        r.add(f"{path}.tokens", "expected an integer ≥ 0")
    expect = item.get("expect", {})
    _expect(expect, f"{path}.expect", r)
    if len(r.problems) > before or principal is None:
        return None
    return Case(
        name=str(name),
        request=request,
        expect=expect,
        endpoint=endpoint,
        principal=principal,
        metadata=metadata,
        tokens=tokens,
        location=f"{r.source}:{r.line(path)}",
    )


def parse_principal(value: Any, path: str, r: Reporter) -> Principal | None:
    if not isinstance(value, dict):
        r.add(path, "expected a mapping (name, key, team, project, user, role, metadata)")
        return None
    if not _keys(value, PRINCIPAL_KEYS, path, r):
        return None
    strings = {k: v for k, v in value.items() if k != "metadata"}
    bad = [k for k, v in strings.items() if not isinstance(v, str)]
    for key in bad:
        r.add(f"{path}.{key}", "expected a string")
    metadata = value.get("metadata", {})
    if not _str_map(metadata):
        r.add(f"{path}.metadata", "expected a mapping of name: string")
        return None
    if bad:
        return None
    return Principal(
        name=strings.get("name", "test"),
        key_id=strings.get("key", ""),
        project=strings.get("project", "default"),
        team=strings.get("team", ""),
        user=strings.get("user", ""),
        role=strings.get("role", "developer"),
        metadata=dict(metadata),
    )


def _expect(value: Any, path: str, r: Reporter) -> None:
    if not isinstance(value, dict) or not value:
        r.add(path, f"expected a mapping of what to check ({', '.join(EXPECT_KEYS)})")
        return
    _keys(value, EXPECT_KEYS, path, r)
    checks: dict[str, tuple[Any, str]] = {
        "decision": (lambda v: v in ("allow", "deny"), "allow or deny"),
        "status": (lambda v: isinstance(v, int) or v is None, "an integer or null"),
        "code": (lambda v: isinstance(v, str) or v is None, "a string or null"),
        "model": (lambda v: isinstance(v, str) or v is None, "a string or null"),
        "regions": (lambda v: _str_list(v) or v is None, "a list of strings or null"),
        "providers": (lambda v: _str_list(v) or v is None, "a list of strings or null"),
        "tags": (_str_list, "a list of strings"),
        "max_tokens": (lambda v: isinstance(v, int) or v is None, "an integer or null"),
        "guardrails": (_str_map, "a mapping of check: action"),
        "labels": (_str_map, "a mapping of label: value"),
        "matched": (_str_list, "a list of policy names"),
        "shadow": (_str_list, "a list of policy names"),
    }
    for key, item in value.items():
        if key in checks and not checks[key][0](item):
            r.add(f"{path}.{key}", f"expected {checks[key][1]}")


def _keys(value: dict[str, Any], known: Sequence[str], path: str, r: Reporter) -> bool:
    unknown = [k for k in value if k not in known]
    for key in unknown:
        r.add(f"{path}.{key}", f"unknown key (expected one of: {', '.join(known)})")
    return not unknown


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
