"""The policy test runner and `gateway policy check | test | explain`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.policy import PolicyError
from gateway.policy.testing import estimate_tokens, load_cases, run_tests

FIXTURES = Path(__file__).parent / "fixtures"
POLICIES = FIXTURES / "policies"
FAILING = FIXTURES / "failing"


def test_the_runner_passes_the_fixture_cases():
    results = run_tests([POLICIES], [POLICIES / "tests"])
    assert [(r.case.name, r.diffs) for r in results] == [
        ("free plan is sent to the small model with a cap", ()),
        ("free plan big prompt is refused", ()),
        ("estimated tokens count too", ()),
        ("eu customer stays in eu, shadow recorded", ()),
        ("an admin counts as an eu customer through the body's metadata", ()),
        ("the case's metadata wins over the body's, as headers do", ()),
    ]
    assert all(r.passed for r in results)


def test_a_failing_case_reports_a_diff_per_unmet_expectation():
    passing, failing = run_tests([POLICIES], [FAILING])
    assert passing.passed
    assert not failing.passed
    assert failing.diffs == ('model: expected "gpt-4o", got "gpt-4o-mini"',)
    assert failing.case.location == f"{FAILING / 'cases.yaml'}:4"


def test_estimated_tokens_decide_a_threshold(tmp_path):
    (tmp_path / "p.yaml").write_text("- name: big\n  match: {tokens: {gte: 10}}\n  actions: {deny: {}}\n")
    (tmp_path / "t.yaml").write_text(
        textwrap.dedent(
            """\
            - name: forty characters are ten tokens
              request:
                messages: [{role: user, content: [{type: text, text: "0123456789012345678901234567890123456789"}]}]
              expect: {decision: deny}
            - name: thirty-nine are nine
              request: {prompt: "012345678901234567890123456789012345678"}
              expect: {decision: allow}
            - name: given tokens win over the estimate
              request: {prompt: "012345678901234567890123456789012345678"}
              tokens: 10
              expect: {decision: deny}
            """
        )
    )
    assert [r.diffs for r in run_tests([tmp_path / "p.yaml"], [tmp_path / "t.yaml"])] == [(), (), ()]
    assert estimate_tokens({"messages": [{"role": "user", "content": "abcd" * 3}], "input": ["abcd"]}) == 4


def test_case_files_are_checked_with_lines(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text(
        "cases:\n  - name: x\n    request: {model: m, endpoint: chatt}\n    principal: {teem: a}\n"
        "    expect: {decison: allow, decision: maybe}\n  - name: x\n    request: {}\n    expect: {tags: [a]}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_cases([path])
    assert info.value.lines() == [
        f"{path}:3: cases[0].request.endpoint: must be one of chat, completions, embeddings, messages, got 'chatt'",
        f"{path}:4: cases[0].principal.teem: unknown key (expected one of: name, key, team, project, user, role,"
        " metadata)",
        f"{path}:5: cases[0].expect.decison: unknown key (expected one of: decision, status, code, model, regions,"
        " providers, tags, max_tokens, guardrails, labels, matched, shadow)",
        f"{path}:5: cases[0].expect.decision: expected allow or deny",
    ]


def test_duplicate_case_names(tmp_path):
    path = tmp_path / "cases.yaml"
    path.write_text(
        "- {name: x, request: {}, expect: {decision: allow}}\n- {name: x, request: {}, expect: {tags: []}}\n"
    )
    with pytest.raises(PolicyError, match=r"cases\.yaml:2: cases\[1\]\.name: duplicate case name 'x'"):
        load_cases([path])


# --- the CLI -------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_config(tmp_path, monkeypatch):
    # The policy commands must not need gateway.yaml: run them where there is none.
    monkeypatch.chdir(tmp_path)


def test_check_ok(capsys):
    assert main(["policy", "check", str(POLICIES)]) == 0
    assert capsys.readouterr().out == "6 policies in 2 files: ok\n"


def test_check_prints_every_problem_and_fails(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("- name: a\n  actions: {deny: {status: 200}}\n- name: a\n")
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{tmp_path / 'bad.yaml'}:2: policies[0].actions.deny.status: expected a 4xx status code, got 200",
        "1 problem(s)",
    ]


def test_check_defaults_to_policies_dir(tmp_path, capsys):
    assert main(["policy", "check"]) == 1
    assert "policies: no such file or directory" in capsys.readouterr().err
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("- name: p\n")
    assert main(["policy", "check"]) == 0
    assert capsys.readouterr().out == "1 policies in 1 files: ok\n"


def test_test_passes(capsys):
    assert main(["policy", "test", str(POLICIES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PASS free plan is sent to the small model with a cap"
    assert out[-1] == "6 passed, 0 failed"


def test_test_fails_with_the_diff(capsys):
    assert main(["policy", "test", str(POLICIES), "--tests", str(FAILING)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "PASS this one passes",
        "FAIL wrong model expected",
        '    model: expected "gpt-4o", got "gpt-4o-mini"',
    ]
    assert out[-1] == "1 passed, 1 failed"


def test_test_without_cases_fails(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("- name: p\n")
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "no test cases found" in capsys.readouterr().err


def test_explain(tmp_path, capsys):
    request = tmp_path / "req.json"
    request.write_bytes(orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
    principal = tmp_path / "p.json"
    principal.write_bytes(orjson.dumps({"name": "alice", "metadata": {"plan": "free"}}))
    assert main(["policy", "explain", "--request", str(request), "--principal", str(principal), str(POLICIES)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:3] == [
        "no    free-plan-big-prompts [enforce, priority 200]: match.tokens: 0 is not > 4000",
        "MATCH free-plan-cheaper-model [enforce, priority 100]: matched; applied",
        'no    eu-customers-stay-in-eu [enforce, priority 50]: match.region: "" is not one of ["eu"]',
    ]
    decision = orjson.loads(out[out.index("{") :])
    assert (decision["decision"], decision["model"]) == ("allow", "gpt-4o-mini")
    assert main(["policy", "explain", "--request", str(request), "--tokens", "5000", str(POLICIES)]) == 0
    assert '"decision": "allow"' in capsys.readouterr().out  # no plan: the free-plan deny does not apply


def test_explain_with_unreadable_input(tmp_path, capsys):
    assert main(["policy", "explain", "--request", str(tmp_path / "missing.json"), str(POLICIES)]) == 2
    (tmp_path / "bad.json").write_text("{nope")
    assert main(["policy", "explain", "--request", str(tmp_path / "bad.json"), str(POLICIES)]) == 2
    assert "invalid JSON" in capsys.readouterr().err
