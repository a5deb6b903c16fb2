"""`gateway policy check | test | explain`: policy files checked, tested and explained, with no gateway running.

None of these needs gateway.yaml or the network. Problems print as `file:line: key.path: message`; every
command exits 1 when something is wrong with the policies or a test fails, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.policy import Facts, PolicyError, load_policies, request_metadata
from gateway.policy.problems import Reporter
from gateway.policy.testing import estimate_tokens, load_cases, parse_principal, run_cases

DEFAULT_PATHS = ["policies"]


def add_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="check, test and explain policy files")
    actions = policy.add_subparsers(dest="action", required=True)
    paths_help = "policy files or directories (default: policies/)"
    check = actions.add_parser("check", help="validate policy files and print every problem")
    check.add_argument("paths", nargs="*", default=DEFAULT_PATHS, help=paths_help)
    test = actions.add_parser("test", help="run the policy test cases (<dir>/tests/*.yaml)")
    test.add_argument("paths", nargs="*", default=DEFAULT_PATHS, help=paths_help)
    test.add_argument("--tests", action="append", default=[], metavar="PATH", help="test files or directories")
    explain = actions.add_parser("explain", help="show how the policies decide one request")
    explain.add_argument("paths", nargs="*", default=DEFAULT_PATHS, help=paths_help)
    explain.add_argument("--request", required=True, metavar="FILE", help="the request body, as JSON")
    explain.add_argument("--principal", metavar="FILE", help="the caller, as JSON: name, key, team, role, metadata")
    explain.add_argument("--endpoint", default="chat", choices=["chat", "completions", "embeddings", "messages"])
    explain.add_argument("--metadata", action="append", default=[], metavar="K=V", help="request metadata")
    explain.add_argument("--tokens", type=int, help="the prompt's tokens (default: estimated, len(text) // 4)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "check":
            policies = load_policies(args.paths)
            print(f"{len(policies)} policies in {len(policies.files)} files: ok")
            return 0
        if args.action == "test":
            return _test(args)
        return _explain(args)
    except _Unreadable as exc:
        print(exc, file=sys.stderr)
        return 2
    except PolicyError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s)", file=sys.stderr)
        return 1


def _test(args: argparse.Namespace) -> int:
    policies = load_policies(args.paths)
    test_paths = args.tests or [Path(p) / "tests" for p in args.paths if Path(p, "tests").is_dir()]
    cases = load_cases(test_paths)
    if not cases:
        print("no test cases found (looked in <dir>/tests/ of each directory, or give --tests)", file=sys.stderr)
        return 1
    results = run_cases(policies, cases)
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'} {result.case.name}")
        for diff in result.diffs:
            print(f"    {diff}")
        if result.diffs:
            print(f"    ({result.case.location}; matched: {', '.join(result.decision.matched) or 'none'})")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    request = _read_json(args.request)
    raw_principal = _read_json(args.principal) if args.principal else {}
    if not isinstance(request, dict) or not isinstance(raw_principal, dict):
        raise _Unreadable("the request and the principal must be JSON objects")
    reporter = Reporter(args.principal or "principal")
    principal = parse_principal(raw_principal, "principal", reporter)
    if principal is None:
        raise PolicyError(reporter.problems)
    policies = load_policies(args.paths)
    tokens = args.tokens if args.tokens is not None else estimate_tokens(request)
    metadata = {**request_metadata(request), **dict(m.partition("=")[::2] for m in args.metadata)}
    explanation = policies.explain(Facts.from_request(request, args.endpoint, principal, tokens, metadata))
    for line in explanation.lines():
        print(line)
    if not explanation.steps:
        print("(no policies)")
    print(orjson.dumps(explanation.decision.to_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


class _Unreadable(Exception):
    """An input file (request, principal) that cannot be read or parsed: exit 2."""


def _read_json(path: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise _Unreadable(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise _Unreadable(f"{path}: invalid JSON: {exc}") from None
