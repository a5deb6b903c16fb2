"""The exact key and the semantic scope: what changes the answer changes the key, nothing else does."""

from __future__ import annotations

from typing import Any

from gateway.cache.keys import deterministic, exact_key, request_control, semantic_parts

BODY: dict[str, Any] = {
    "model": "demo",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    "temperature": 0,
}


def key(body: dict[str, Any], project: str = "p1", api: str = "", model: str = "demo") -> str | None:
    return exact_key(project, "chat/completions", api, model, body)


def test_two_projects_never_share_a_key():
    assert key(BODY, "p1") != key(BODY, "p2")


def test_the_order_of_json_keys_and_delivery_fields_do_not_change_the_key():
    reordered = {"temperature": 0, "messages": BODY["messages"], "model": "demo"}
    delivered = {
        **BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
        "metadata": {"a": "b"},
    }
    assert key(reordered) == key(BODY) == key(delivered)


def test_everything_that_changes_the_answer_changes_the_key():
    changes: list[dict[str, Any]] = [
        {"temperature": 0.0001},
        {"seed": 1},
        {"max_tokens": 5},
        {"stop": ["x"]},
        {"n": 2},
        {"logprobs": True},
        {"top_p": 0.5},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}]},
    ]
    keys = {key({**BODY, **change}) for change in changes}
    assert len(keys) == len(changes)
    assert key(BODY) not in keys


def test_the_model_group_and_the_ingress_api_are_in_the_key():
    assert key(BODY, model="other") != key(BODY)
    assert key(BODY, api="anthropic") != key(BODY)
    assert exact_key("p1", "completions", "", "demo", BODY) != key(BODY)


def test_a_body_too_deep_to_encode_has_no_key():
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    assert key({**BODY, "tools": deep}) is None


def test_the_semantic_scope_leaves_out_only_the_last_user_turns_text():
    scope, text = semantic_parts("p1", "chat/completions", "", "demo", BODY) or ("", "")
    assert text == "What is 2 + 2?"
    other = {**BODY, "messages": [BODY["messages"][0], {"role": "user", "content": "How much is two plus two?"}]}
    assert semantic_parts("p1", "chat/completions", "", "demo", other) == (scope, "How much is two plus two?")
    system = {**BODY, "messages": [{"role": "system", "content": "Be long."}, BODY["messages"][1]]}
    assert semantic_parts("p1", "chat/completions", "", "demo", system)[0] != scope  # type: ignore[index]
    assert semantic_parts("p2", "chat/completions", "", "demo", BODY)[0] != scope  # type: ignore[index]


def test_no_semantic_scope_without_a_text_user_turn_last():
    assistant_last = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": "4"}]}
    image = {**BODY, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert semantic_parts("p1", "chat/completions", "", "demo", assistant_last) is None
    assert semantic_parts("p1", "chat/completions", "", "demo", image) is None
    assert semantic_parts("p1", "embeddings", "", "demo", {"input": "x"}) is None


def test_deterministic_means_temperature_zero_or_a_seed_and_embeddings_always():
    assert deterministic("chat/completions", {"temperature": 0})
    assert deterministic("chat/completions", {"temperature": 0.0})
    assert deterministic("chat/completions", {"seed": 7, "temperature": 1})
    assert not deterministic("chat/completions", {})
    assert not deterministic("chat/completions", {"temperature": False})
    assert not deterministic("chat/completions", {"temperature": 0.2, "seed": "7"})
    assert deterministic("embeddings", {})


def test_request_headers_refresh_or_skip_the_cache():
    assert request_control([]) == "use"
    assert request_control([(b"cache-control", b"no-cache")]) == "refresh"
    assert request_control([(b"cache-control", b"max-age=0, no-store")]) == "skip"
    assert request_control([(b"x-gateway-cache", b"bypass")]) == "skip"
    assert request_control([(b"x-gateway-cache", b"no-cache")]) == "refresh"
    assert request_control([(b"cache-control", b"no-cache"), (b"x-gateway-cache", b"no-store")]) == "skip"
