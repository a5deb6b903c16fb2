"""Matching: each field, each operator, all/any/not, and the facts a request gives."""

from __future__ import annotations

import pytest

from gateway.context import Principal
from gateway.policy import Facts, request_metadata
from tests.unit.policy.helpers import matches, of


@pytest.mark.parametrize(
    ("field", "value", "other"),
    [
        ("model", "gpt-4o", "gpt-4o-mini"),
        ("endpoint", "embeddings", "chat"),
        ("key", "k-123", "k-124"),
        ("key_name", "ci-bot", "ci-bot-2"),
        ("team", "research", "web"),
        ("project", "atlas", "default"),
        ("user", "alice", "bob"),
        ("role", "viewer", "developer"),
        ("plan", "free", "pro"),
        ("region", "eu", "us"),
    ],
)
def test_each_string_field_matches_exactly_or_any_of_a_list(field, value, other):
    assert matches({field: value}, **{field: value})
    assert not matches({field: value}, **{field: other})
    assert matches({field: [other, value]}, **{field: value})
    assert not matches({field: {"not_in": [value]}}, **{field: value})
    assert matches({field: {"ne": other}}, **{field: value})


def test_model_globs_match_the_whole_name_and_are_case_sensitive():
    pattern = {"model": ["gpt-4o", "claude-3-*"]}
    assert matches(pattern, model="gpt-4o")
    assert matches(pattern, model="claude-3-haiku")
    assert not matches(pattern, model="gpt-4o-mini")  # no glob character: exact
    assert not matches(pattern, model="my-claude-3-x")  # anchored at the start
    assert not matches(pattern, model="Claude-3-haiku")
    assert matches({"model": "gpt-4?"}, model="gpt-4o")
    assert matches({"team": "ml-*"}, team="ml-vision")  # globs work for every string field


def test_booleans():
    assert matches({"stream": True}, stream=True)
    assert not matches({"stream": True}, stream=False)
    assert matches({"has_tools": False}, has_tools=False)
    assert not matches({"has_tools": False}, has_tools=True)


@pytest.mark.parametrize(
    ("spec", "hits", "misses"),
    [
        (4000, [4000], [3999, 4001]),
        ([10, 20], [10, 20], [15]),
        ({"gt": 4000}, [4001], [4000]),
        ({"gte": 4000}, [4000], [3999]),
        ({"lt": 100}, [99], [100]),
        ({"lte": 100}, [100], [101]),
        ({"gt": 10, "lt": 20}, [11, 19], [10, 20]),
        ({"ne": 0}, [1], [0]),
        ({"in": [1, 2]}, [2], [3]),
        ({"not_in": [1, 2]}, [3], [1]),
    ],
)
def test_tokens(spec, hits, misses):
    for tokens in hits:
        assert matches({"tokens": spec}, tokens=tokens), tokens
    for tokens in misses:
        assert not matches({"tokens": spec}, tokens=tokens), tokens


def test_metadata_values_lists_and_absent_keys():
    assert matches({"metadata": {"tier": "gold"}}, metadata={"tier": "gold"})
    assert matches({"metadata": {"tier": ["gold", "silver"]}}, metadata={"tier": "silver"})
    assert not matches({"metadata": {"tier": "gold"}}, metadata={"tier": "bronze"})
    assert not matches({"metadata": {"tier": "gold"}}, metadata={})
    assert matches({"metadata.tier": "gold"}, metadata={"tier": "gold"})  # the dotted name works in match too
    # Every metadata condition must hold.
    assert not matches({"metadata": {"tier": "gold", "env": "prod"}}, metadata={"tier": "gold", "env": "dev"})


@pytest.mark.parametrize(
    ("condition", "metadata", "expected"),
    [
        ({"eq": "acme"}, {"c": "acme"}, True),
        ({"eq": "acme"}, {}, False),
        ({"ne": "acme"}, {}, True),  # absent is not equal
        ({"in": ["a", "b"]}, {"c": "b"}, True),
        ({"not_in": ["a", "b"]}, {}, True),
        ({"regex": "^acme-"}, {"c": "acme-42"}, True),
        ({"regex": "acme"}, {"c": "big-acme-co"}, True),  # found anywhere unless anchored
        ({"regex": "^acme-"}, {"c": "big-acme-co"}, False),
        ({"regex": "^acme-"}, {}, False),
        ({"glob": "acme-*"}, {"c": "acme-1"}, True),
        ({"glob": ["x", "y?"]}, {"c": "yz"}, True),
        ({"glob": "acme-*"}, {"c": "x-acme-1"}, False),
        ({"exists": True}, {"c": "v"}, True),
        ({"exists": True}, {}, False),
        ({"exists": False}, {}, True),
        ({"exists": False}, {"c": "v"}, False),
    ],
)
def test_operators_in_when(condition, metadata, expected):
    assert matches(when={"field": "metadata.c", **condition}, metadata=metadata) is expected


def test_several_operators_in_one_condition_must_all_hold():
    when = {"field": "tokens", "gte": 10, "lt": 20}
    assert matches(when=when, tokens=10)
    assert not matches(when=when, tokens=20)


def test_all_any_not_nest():
    when = {
        "all": [
            {"field": "metadata.customer", "regex": "^acme-"},
            {"any": [{"field": "tokens", "gte": 1000}, {"not": {"field": "role", "in": ["admin"]}}]},
        ]
    }
    acme = {"customer": "acme-1"}
    assert matches(when=when, metadata=acme, role="developer", tokens=0)  # not admin
    assert matches(when=when, metadata=acme, role="admin", tokens=1000)  # admin, but many tokens
    assert not matches(when=when, metadata=acme, role="admin", tokens=999)  # neither branch of any
    assert not matches(when=when, metadata={"customer": "beta-1"}, role="developer")  # all fails
    assert matches(when={"not": {"not": {"field": "plan", "eq": "free"}}}, plan="free")


def test_match_and_when_must_both_hold_and_no_conditions_match_everything():
    match, when = {"plan": "free"}, {"field": "stream", "eq": True}
    assert matches(match, when, plan="free", stream=True)
    assert not matches(match, when, plan="free", stream=False)
    assert not matches(match, when, plan="pro", stream=True)
    assert matches(model="anything")


def test_facts_from_request():
    principal = Principal(
        name="ci-bot", key_id="k1", project="atlas", team="ml", user="u1", role="viewer",
        metadata={"plan": "free", "region": "eu", "tier": "gold"},
    )  # fmt: skip
    body = {"model": "gpt-4o", "stream": True, "functions": [{"name": "f"}]}
    facts = Facts.from_request(body, "chat/completions", principal, 42, {"tier": "platinum", "customer": "acme"})
    assert facts == Facts(
        model="gpt-4o", endpoint="chat", key="k1", key_name="ci-bot", team="ml", project="atlas", user="u1",
        role="viewer", plan="free", region="eu", stream=True, has_tools=True, tokens=42,
        metadata={"plan": "free", "region": "eu", "tier": "gold", "customer": "acme"},
    )  # fmt: skip
    # The key's own metadata wins: a request cannot claim a better tier.
    assert facts.metadata["tier"] == "gold"
    bare = Facts.from_request({"model": 3, "stream": "yes", "tools": []}, "/v1/embeddings", Principal(name="x"))
    assert (bare.model, bare.stream, bare.has_tools, bare.endpoint, bare.plan) == ("", False, False, "embeddings", "")
    # A request's metadata cannot set the plan fact either (it comes from the principal only).
    assert Facts.from_request({}, "chat", Principal(name="x"), request_metadata={"plan": "pro"}).plan == ""


def test_facts_from_dict():
    facts = Facts.from_dict({"plan": "free", "tokens": 3, "metadata": {"n": 1}})
    assert (facts.plan, facts.tokens, facts.metadata) == ("free", 3, {"n": "1"})
    assert Facts.from_dict(facts.to_dict()) == facts
    with pytest.raises(ValueError, match="unknown fact"):
        Facts.from_dict({"plann": "free"})


def test_request_metadata_from_body_and_headers():
    body = {"metadata": {"customer": "acme", "n": 3, "env": "dev"}}
    headers = [(b"x-gateway-metadata-env", b"prod"), (b"x-gateway-metadata-", b"empty"), (b"authorization", b"x")]
    assert request_metadata(body, headers) == {"customer": "acme", "env": "prod"}
    assert request_metadata({"metadata": "nope"}) == {}


def test_needs_tokens_only_when_an_active_policy_reads_them():
    assert not of({"name": "a", "match": {"plan": "free"}}).needs_tokens
    assert of({"name": "a", "when": {"not": {"field": "tokens", "gt": 5}}}).needs_tokens
    assert of({"name": "a", "mode": "shadow", "match": {"tokens": {"gt": 5}}}).needs_tokens
    assert not of({"name": "a", "mode": "off", "match": {"tokens": {"gt": 5}}}).needs_tokens


def test_cheap_checks_run_before_regexes():
    policies = of({"name": "p", "match": {"metadata.c": {"regex": "^a"}, "plan": "free"}})
    (step,) = policies.explain(Facts(plan="pro", metadata={"c": "b"})).steps
    assert step.reason == 'match.plan: "pro" is not one of ["free"]'
