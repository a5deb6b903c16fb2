"""The loader: every problem named by file, line and key path, all of them at once."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy import PolicyError, PolicySet, Problem, load_policies, parse_policies
from tests.unit.policy.helpers import problems


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_policy_gets_its_defaults():
    (policy,) = parse_policies("policies:\n  - name: refuse-all\n    actions: {deny: {}}\n", "api:refuse")
    assert (policy.priority, policy.mode, policy.source, policy.line, policy.path) == (
        0,
        "enforce",
        "api:refuse",
        2,
        "policies[0]",
    )
    deny = policy.actions.deny
    assert deny is not None
    assert (deny.status, deny.code, deny.policy) == (403, "policy_denied", "refuse-all")
    assert "refuse-all" in deny.message


def test_a_problem_names_the_file_the_line_and_the_key_path(tmp_path):
    path = write(
        tmp_path / "eu.yaml",
        """\
        policies:
          - name: fine
            actions: {tag: {a: b}}
          - name: eu-only
            match:
              region: eu
            actions:
              route:
                regions: eu
        """,
    )
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    assert info.value.lines() == [
        f"{path}:9: policies[1].actions.route.regions: expected a non-empty list of strings, got 'eu'"
    ]
    assert info.value.problems == [
        Problem(str(path), 9, "policies[1].actions.route.regions", "expected a non-empty list of strings, got 'eu'")
    ]
    assert str(info.value) == info.value.lines()[0]


def test_every_problem_is_reported_in_line_order_not_just_the_first():
    lines = problems(
        """\
        policies:
          - name: Bad Name
            prority: 3
            actions:
              rout: {model: x}
          - name: ok-name
            mode: enforced
            actions:
              deny: {status: 200}
        """
    )
    assert lines == [
        "test.yaml:2: policies[0].name: expected a name matching [a-z0-9][a-z0-9._-]*, got 'Bad Name'",
        "test.yaml:3: policies[0].prority: unknown key (expected one of: name, description, priority, mode, match,"
        " when, actions)",
        "test.yaml:5: policies[0].actions.rout: unknown action (expected one of: deny, route, rewrite, limit,"
        " guardrails, tag, cache)",
        "test.yaml:7: policies[1].mode: must be one of enforce, shadow, off, got 'enforced'",
        "test.yaml:9: policies[1].actions.deny.status: expected a 4xx status code, got 200",
    ]


@pytest.mark.parametrize(
    ("snippet", "line", "key_path", "message"),
    [
        ("priority: high", 3, "priority", "expected an integer, got 'high'"),
        ("match:\n  plann: free", 4, "match.plann", "unknown field"),
        ("match:\n  endpoint: chatt", 4, "match.endpoint", "unknown endpoint 'chatt'"),
        ("match:\n  role: [admin, root]", 4, "match.role", "unknown role 'root'"),
        ("match:\n  model: 4", 4, "match.model", "expected a string or a list of strings, got 4"),
        ("match:\n  stream: [true]", 4, "match.stream", "expected a boolean for stream"),
        ("match:\n  tokens: {greater: 3}", 4, "match.tokens.greater", "unknown operator 'greater'"),
        ("match:\n  tokens: {gt: lots}", 4, "match.tokens.gt", "expected a number, got 'lots'"),
        ("match:\n  model: {gt: 3}", 4, "match.model.gt", "operator gt compares numbers; model is a string"),
        ("match:\n  stream: {regex: x}", 4, "match.stream.regex", "operator regex applies to string fields"),
        ("when:\n  field: tokens", 3, "when", "give an operator"),
        ("when:\n  field: plan\n  eq: free\n  all: []", 3, "when", "give exactly one of field, all, any or not"),
        ("when:\n  any: []", 4, "when.any", "expected a non-empty list of conditions"),
        ("when:\n  all:\n    - {field: tier, eq: x}", 5, "when.all[0].field", "unknown field 'tier'"),
        ("when:\n  not: {field: team, in: x}", 4, "when.not.in", "expected a non-empty list of strings, got 'x'"),
        ("actions:\n  deny: {status: 503}", 4, "actions.deny.status", "expected a 4xx status code, got 503"),
        ("actions:\n  deny: {code: 'has space'}", 4, "actions.deny.code", "expected a code of letters"),
        ("actions:\n  deny: {}\n  route: {model: x}", 4, "actions.deny", "a deny cannot go with route"),
        ("actions:\n  route: {}", 4, "actions.route", "sets nothing"),
        ("actions:\n  route: {regions: []}", 4, "actions.route.regions", "expected a non-empty list of strings"),
        ("actions:\n  rewrite: {max_tokens: 0}", 4, "actions.rewrite.max_tokens", "expected a positive integer"),
        ("actions:\n  rewrite: {set: {model: x}}", 4, "actions.rewrite.set.model", "cannot be set by a rewrite"),
        ("actions:\n  rewrite: {strip: [messages]}", 4, "actions.rewrite.strip", "cannot strip messages"),
        ("actions:\n  limit: {budget_period: day}", 4, "actions.limit.budget_period", "needs a budget_usd"),
        ("actions:\n  limit: {rpm: -1}", 4, "actions.limit.rpm", "expected a positive integer, got -1"),
        ("actions:\n  guardrails: {pi: {action: block}}", 4, "actions.guardrails.pi", "unknown check 'pi'"),
        ("actions:\n  guardrails: {pii: {stage: input}}", 4, "actions.guardrails.pii.action", "required key"),
        ("actions:\n  guardrails: {pii: {action: retry}}", 4, "actions.guardrails.pii.action", "got 'retry'"),
        ("actions:\n  guardrails:\n    json_schema: {action: redact}", 5, "actions.guardrails.json_schema.action",
         "must be one of block, retry, log, got 'redact'"),
        ("actions:\n  guardrails: {pii: {action: log, stage: in}}", 4, "actions.guardrails.pii.stage", "got 'in'"),
        ("actions:\n  guardrails:\n    injection: {action: block, threshold: 1.5}", 5,
         "actions.guardrails.injection.threshold", "expected a number from 0 to 1, got 1.5"),
        ("actions:\n  guardrails:\n    keywords: {action: block, topics: {x: y}}", 5,
         "actions.guardrails.keywords.topics", "expected a mapping of topic name: list of strings"),
        ("actions:\n  guardrails:\n    length: {action: block, max_chars: -5}", 5,
         "actions.guardrails.length.max_chars", "expected an integer ≥ 0"),
        ("actions:\n  tag: {tier: [a]}", 4, "actions.tag.tier", "expected a string"),
    ],
)  # fmt: skip
def test_each_kind_of_problem_is_located(snippet, line, key_path, message):
    body = textwrap.indent(snippet, "    ")
    (problem,) = problems(f"policies:\n  - name: p\n{body}\n")
    assert problem.startswith(f"test.yaml:{line}: policies[0].{key_path}: "), problem
    assert message in problem


def test_a_bad_regex_is_a_load_error_with_its_position():
    lines = problems(
        """\
        policies:
          - name: p
            when:
              all:
                - {field: metadata.customer, regex: "^acme-("}
        """
    )
    assert lines == [
        "test.yaml:5: policies[0].when.all[0].regex: bad regex '^acme-(': missing ), unterminated subpattern"
        " at position 6"
    ]


def test_duplicate_names_across_files_report_both_locations(tmp_path):
    first = write(tmp_path / "a.yaml", "policies:\n  - name: same\n    actions: {tag: {a: b}}\n")
    second = write(tmp_path / "b.yaml", "- name: other\n  actions: {tag: {a: b}}\n- name: same\n  priority: 1\n")
    with pytest.raises(PolicyError) as info:
        load_policies([first, second])
    assert info.value.lines() == [
        f"{second}:3: policies[1].name: duplicate policy name 'same': also defined at {first}:2 (policies[0])"
    ]


def test_a_policy_set_refuses_duplicate_names_too():
    file_policy = parse_policies("- name: same\n", "policies/a.yaml")[0]
    api_policy = parse_policies("- name: same\n", "api:same")[0]
    with pytest.raises(PolicyError, match=r"api:same:1: policies\[0\]\.name: duplicate policy name 'same'"):
        PolicySet([file_policy, api_policy])


def test_yaml_syntax_errors_and_duplicate_keys_are_located():
    (syntax,) = problems("policies:\n  - name: p\n    match: {model: [x\n")
    assert syntax.startswith("test.yaml:4: invalid YAML: ")  # the wording is libyaml's or PyYAML's
    assert "expected ',' or ']'" in syntax
    assert problems("- name: p\n  priority: 1\n  priority: 2\n") == [
        "test.yaml:3: policies[0].priority: duplicate key (first at line 2)"
    ]


def test_top_level_problems():
    assert problems("rules: []\n") == [
        "test.yaml:1: rules: unknown key (expected: policies, or x-<name> to hold YAML anchors)"
    ]
    assert problems("policies: {name: p}\n") == ["test.yaml:1: policies: expected a list of policies"]
    assert problems("- just a string\n") == [
        "test.yaml:1: policies[0]: expected a policy (a mapping with name, match and actions), got a string"
    ]
    assert parse_policies("", "empty.yaml") == []
    assert parse_policies("policies:\n", "empty.yaml") == []


def test_yaml_booleans_are_only_true_and_false():
    # YAML 1.1 reads `off` and `no` as false: `mode: off` would be an error and `region: no` a boolean.
    (policy,) = parse_policies("- name: p\n  mode: off\n  match: {region: no, stream: true}\n", "x")
    assert policy.mode == "off"
    assert {c.field: c.value for c in policy.match} == {"region": ("no",), "stream": True}


def test_directories_load_yaml_files_in_name_order_and_skip_tests(tmp_path):
    write(tmp_path / "b.yml", "- name: from-b\n")
    write(tmp_path / "a.yaml", "- name: from-a\n")
    write(tmp_path / "notes.txt", "not: policies\n")
    (tmp_path / "tests").mkdir()
    write(tmp_path / "tests" / "cases.yaml", "cases: []\n")
    policies = load_policies([tmp_path])
    assert policies.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))
    assert [p.name for p in policies.policies] == ["from-a", "from-b"]
    # The same file named twice is loaded once (no duplicate-name error against itself).
    assert len(load_policies([tmp_path, tmp_path / "a.yaml"])) == 2


def test_a_missing_path_is_a_problem(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policies([tmp_path / "nope"])
    assert info.value.lines() == [f"{tmp_path / 'nope'}: no such file or directory"]


def test_settings_pass_through_to_the_guardrail():
    (policy,) = parse_policies(
        "- name: p\n  actions:\n    guardrails:\n      pii: {action: redact, types: [email], mask: '#'}\n", "x"
    )
    (check,) = policy.actions.guardrails
    assert (check.name, check.action, check.stages) == ("pii", "redact", frozenset({"input", "output"}))
    assert check.settings == {"types": ["email"], "mask": "#"}


def test_anchors_and_merge_keys():
    policies = parse_policies(
        textwrap.dedent(
            """\
            x-defaults: &defaults {priority: 5, description: shared, mode: shadow}
            policies:
              - name: a
                <<: *defaults
                mode: enforce
              - name: b
                <<: [{priority: 1, description: first}, {priority: 2, mode: off}]
            """
        ),
        "x.yaml",
    )
    assert [(p.name, p.priority, p.mode, p.description) for p in policies] == [
        ("a", 5, "enforce", "shared"),  # the policy's own keys win over what it merges
        ("b", 1, "off", "first"),  # the first merged mapping wins over later ones
    ]


def test_an_alias_cycle_is_a_problem_not_a_hang():
    (cycle, *_) = problems("- name: p\n  match: &m {team: [x, *m]}\n")
    assert cycle == "test.yaml:2: policies[0].match.team[1]: an alias refers to a node that contains it"
