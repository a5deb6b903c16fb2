"""The `cache` action: its settings checked where the file says them."""

from __future__ import annotations

from tests.unit.policy.helpers import policy_set, problems


def test_a_cache_action_parses_with_its_defaults():
    (policy,) = policy_set("""
        policies:
          - name: c
            actions: {cache: {ttl_s: 30}}
        """).policies
    assert policy.actions.cache is not None
    assert (policy.actions.cache.mode, policy.actions.cache.ttl_s, policy.actions.cache.policy) == ("exact", 30.0, "c")


def test_a_bad_cache_action_is_located_setting_by_setting():
    found = problems("""
        policies:
          - name: c
            actions:
              cache: {mode: fuzzy, min_score: 2}
        """)
    assert any("actions.cache.mode: must be one of off, exact, semantic" in line for line in found)
    assert any("actions.cache.min_score: expected a number in (0, 1]" in line for line in found)
    found = problems("- name: c\n  actions: {cache: {size: 1}}\n")
    assert any("actions.cache.size: unknown key" in line for line in found)
    found = problems("""
        policies:
          - name: c
            actions:
              cache: {ttl_s: 0, min_score: 0.9}
        """)
    assert any("actions.cache.ttl_s: expected a positive number of seconds" in line for line in found)
    assert any("actions.cache.min_score: only for mode semantic" in line for line in found)
    assert any("actions.cache: sets nothing" in line for line in problems("- name: c\n  actions: {cache: {}}\n"))
    found = problems("- name: c\n  actions: {deny: {}, cache: {mode: exact}}\n")
    assert any("a deny cannot go with cache" in line for line in found)
