"""apply_rewrite: a decision's rewrite applied to a request body."""

from __future__ import annotations

from gateway.policy import NO_DECISION, Facts, apply_rewrite
from tests.unit.policy.helpers import of


def decision(**rewrite):
    return of({"name": "r", "actions": {"rewrite": rewrite}}).evaluate(Facts())


def chat(**fields):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_no_decision_changes_nothing():
    body = chat(max_tokens=5)
    assert apply_rewrite(body, NO_DECISION) is False
    assert body == chat(max_tokens=5)


def test_max_tokens_is_a_cap():
    capped = decision(max_tokens=100)
    body = chat()
    assert apply_rewrite(body, capped) is True
    assert body["max_tokens"] == 100  # absent: the cap
    body = chat(max_tokens=4000)
    assert apply_rewrite(body, capped) is True
    assert body["max_tokens"] == 100
    body = chat(max_tokens=50)
    assert apply_rewrite(body, capped) is False  # already under the cap
    assert body["max_tokens"] == 50
    body = chat(max_tokens=None)
    apply_rewrite(body, capped)
    assert body["max_tokens"] == 100


def test_max_completion_tokens_is_capped_without_adding_max_tokens():
    body = chat(max_completion_tokens=5000)
    assert apply_rewrite(body, decision(max_tokens=100)) is True
    assert body["max_completion_tokens"] == 100
    assert "max_tokens" not in body  # reasoning models reject the two together
    body = chat(max_completion_tokens=5000, max_tokens=3000)
    apply_rewrite(body, decision(max_tokens=100))
    assert (body["max_completion_tokens"], body["max_tokens"]) == (100, 100)


def test_system_messages_go_after_the_leading_system_messages_in_policy_order():
    both = of(
        {"name": "a", "priority": 2, "actions": {"rewrite": {"system": "First."}}},
        {"name": "b", "priority": 1, "actions": {"rewrite": {"system": "Second."}}},
    ).evaluate(Facts())
    body = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "developer", "content": "D"},
            {"role": "user", "content": "U"},
            {"role": "system", "content": "late"},
        ]
    }
    assert apply_rewrite(body, both) is True
    assert [m["content"] for m in body["messages"]] == ["S", "D", "First.", "Second.", "U", "late"]
    assert body["messages"][2] == {"role": "system", "content": "First."}
    body = {"messages": [{"role": "user", "content": "U"}]}
    apply_rewrite(body, both)
    assert [m["content"] for m in body["messages"]] == ["First.", "Second.", "U"]


def test_set_and_strip():
    d = decision(set={"temperature": 0, "response_format": {"type": "json_object"}}, strip=["user", "logit_bias"])
    body = chat(user="u", temperature=1.5, seed=3)
    assert apply_rewrite(body, d) is True
    assert body == chat(temperature=0, seed=3, response_format={"type": "json_object"})
    # The policy's value is copied: changing the request never changes the policy.
    body["response_format"]["type"] = "text"
    assert d.rewrite.set["response_format"] == {"type": "json_object"}
    assert apply_rewrite(chat(temperature=0, response_format={"type": "json_object"}), d) is False


def test_a_field_stripped_by_one_policy_and_set_by_another_ends_up_set():
    d = of(
        {"name": "a", "actions": {"rewrite": {"strip": ["user"]}}},
        {"name": "b", "actions": {"rewrite": {"set": {"user": "anonymous"}}}},
    ).evaluate(Facts())
    body = chat(user="alice")
    apply_rewrite(body, d)
    assert body["user"] == "anonymous"


def test_legacy_completions_get_no_system_message_and_embeddings_no_cap():
    d = decision(max_tokens=10, system="Be brief.", strip=["user"])
    body = {"model": "m", "prompt": "hi", "user": "u"}
    assert apply_rewrite(body, d, "completions") is True
    assert body == {"model": "m", "prompt": "hi", "max_tokens": 10}
    body = {"model": "m", "input": "hi", "user": "u"}
    apply_rewrite(body, d, "embeddings")
    assert body == {"model": "m", "input": "hi"}
    body = {"model": "m", "input": "hi"}
    assert apply_rewrite(body, decision(max_tokens=10)) is False
