"""How the actions of several matching policies combine: one test per rule of evaluate.py's docstring."""

from __future__ import annotations

from gateway.context import RouteConstraints
from gateway.policy import NO_DECISION, Facts
from tests.unit.policy.helpers import of

ANY = Facts(model="gpt-4o", plan="free")


def p(name, priority=0, mode="enforce", **actions):
    return {"name": name, "priority": priority, "mode": mode, "actions": actions}


def test_nothing_matched_is_the_no_decision_object():
    policies = of({"name": "a", "match": {"plan": "pro"}, "actions": {"deny": {}}})
    assert policies.evaluate(ANY) is NO_DECISION
    assert of().evaluate(ANY) is NO_DECISION


def test_rule_1_higher_priority_first_then_name():
    policies = of(
        p("b-low", 1, route={"model": "low"}),
        p("z-high", 5, route={"model": "z"}),
        p("a-high", 5, route={"model": "a"}),
    )
    decision = policies.evaluate(ANY)
    assert [x.name for x in policies.policies] == ["a-high", "z-high", "b-low"]
    assert decision.matched == ("a-high", "z-high", "b-low")
    assert (decision.model, decision.model_policy) == ("a", "a-high")


def test_rule_1_off_policies_are_skipped():
    decision = of(p("retired", 100, "off", deny={}), p("live", tag={"x": "y"})).evaluate(ANY)
    assert not decision.denied
    assert decision.matched == ("live",)
    assert of(p("retired", mode="off", deny={})).evaluate(ANY) is NO_DECISION


def test_rule_2_shadow_policies_are_recorded_never_applied():
    decision = of(
        p("shadow-deny", 100, "shadow", deny={"message": "would refuse"}),
        p("shadow-route", 90, "shadow", route={"model": "small", "regions": ["eu"]}),
    ).evaluate(ANY)
    assert decision is not NO_DECISION
    assert not decision.denied
    assert (decision.model, decision.regions, decision.matched) == (None, None, ())
    assert [s.policy for s in decision.shadow] == ["shadow-deny", "shadow-route"]
    assert decision.shadow[0].actions == {"deny": {"status": 403, "code": "policy_denied", "message": "would refuse"}}
    assert decision.shadow[1].actions == {"route": {"model": "small", "regions": ["eu"]}}


def test_rule_3_the_first_deny_wins_and_nothing_else_applies():
    decision = of(
        p("label-first", 300, tag={"seen": "first"}, route={"model": "x"}),
        p("deny-high", 200, deny={"status": 451, "code": "legal", "message": "no"}, tag={"reason": "legal"}),
        p("deny-low", 100, deny={"message": "later"}, tag={"after": "deny"}),
        p("route-low", 50, route={"model": "small"}, rewrite={"max_tokens": 5}),
    ).evaluate(ANY)
    assert decision.deny is not None
    assert (decision.deny.status, decision.deny.code, decision.deny.message, decision.deny.policy) == (
        451,
        "legal",
        "no",
        "deny-high",
    )
    assert decision.matched == ("label-first", "deny-high", "deny-low", "route-low")  # all still evaluated
    assert decision.labels == {"seen": "first", "reason": "legal"}  # labels up to the deny, not after
    assert (decision.model, decision.rewrite.max_tokens) == (None, None)


def test_rule_4_the_first_model_wins_and_the_others_are_recorded():
    decision = of(p("a", 2, route={"model": "one"}), p("b", 1, route={"model": "two"})).evaluate(ANY)
    assert (decision.model, decision.model_policy) == ("one", "a")
    assert decision.overridden == ("b: route.model 'two' overridden by a",)


def test_rule_4_regions_and_providers_intersect_tags_union():
    decision = of(
        p("a", 3, route={"regions": ["eu", "us"], "providers": ["azure", "openai"], "tags": ["hipaa"]}),
        p("b", 2, route={"regions": ["eu", "ap"], "tags": ["gdpr"]}),
        p("c", 1, route={"providers": ["azure"]}),
    ).evaluate(ANY)
    assert decision.regions == frozenset({"eu"})
    assert decision.providers == frozenset({"azure"})
    assert decision.tags == frozenset({"hipaa", "gdpr"})
    assert decision.route_constraints() == RouteConstraints(
        regions=frozenset({"eu"}), providers=frozenset({"azure"}), tags=frozenset({"hipaa", "gdpr"})
    )
    assert of(p("t", tag={"a": "b"})).evaluate(ANY).route_constraints() is None


def test_rule_4_an_empty_intersection_denies_with_no_deployment_allowed():
    decision = of(
        p("eu-only", 3, route={"regions": ["eu"]}, tag={"a": "1"}),
        p("us-only", 2, route={"regions": ["us"]}),
        p("model", 1, route={"model": "x"}),
    ).evaluate(ANY)
    assert decision.deny is not None
    assert (decision.deny.status, decision.deny.code) == (403, "no_deployment_allowed")
    assert decision.deny.message == "Policies eu-only and us-only allow no common region."
    assert decision.model is None
    assert decision.labels == {"a": "1"}
    providers = of(p("a", route={"providers": ["azure"]}), p("b", route={"providers": ["openai"]})).evaluate(ANY)
    assert providers.deny is not None
    assert providers.deny.message == "Policies a and b allow no common provider."


def test_rule_5_rewrites_combine():
    decision = of(
        p("a", 3, rewrite={"max_tokens": 2000, "set": {"temperature": 0}, "strip": ["user"], "system": "First."}),
        p("b", 2, rewrite={"max_tokens": 500, "set": {"temperature": 1, "top_p": 0.5}, "strip": ["logit_bias"]}),
        p("c", 1, rewrite={"max_tokens": 1000, "system": "Second."}),
    ).evaluate(ANY)
    rewrite = decision.rewrite
    assert rewrite.max_tokens == 500  # the smallest cap
    assert rewrite.set == {"temperature": 0, "top_p": 0.5}  # per field, the first
    assert rewrite.strip == frozenset({"user", "logit_bias"})
    assert rewrite.system == ("First.", "Second.")


def test_rule_6_limits_per_field_first_wins():
    decision = of(
        p("a", 2, limit={"rpm": 10}),
        p("b", 1, limit={"rpm": 100, "tpm": 5000, "budget_usd": 5}),
    ).evaluate(ANY)
    limit = decision.limit
    assert (limit.rpm, limit.tpm, limit.budget_usd, limit.budget_period) == (10, 5000, 5.0, "month")


def test_rule_7_guardrails_first_settings_strictest_action_union_of_stages():
    decision = of(
        p("a", 3, guardrails={"pii": {"action": "log", "types": ["email"], "stage": "input"}}),
        p("b", 2, guardrails={"pii": {"action": "block", "types": ["phone"], "stage": "output"}}),
        p("c", 1, guardrails={"pii": {"action": "redact"}, "injection": {"action": "log"}}),
    ).evaluate(ANY)
    pii = decision.guardrails["pii"]
    assert (pii.action, pii.stages, pii.settings, pii.policy) == (
        "block",
        frozenset({"input", "output"}),
        {"types": ["email"]},
        "a",
    )
    assert decision.guardrails["injection"].action == "log"
    assert decision.guardrails["injection"].stages == frozenset({"input"})


def test_rule_7_json_schema_retry_is_between_log_and_block():
    def action(*actions):
        policies = [p(f"p{i}", -i, guardrails={"json_schema": {"action": a}}) for i, a in enumerate(actions)]
        return of(*policies).evaluate(ANY).guardrails["json_schema"].action

    assert action("log", "retry") == "retry"
    assert action("retry", "block", "log") == "block"
    assert of(p("x", guardrails={"json_schema": {"action": "log"}})).evaluate(ANY).guardrails[
        "json_schema"
    ].stages == frozenset({"output"})


def test_rule_8_labels_per_key_first_wins():
    decision = of(p("a", 2, tag={"tier": "free"}), p("b", 1, tag={"tier": "pro", "team": "x"})).evaluate(ANY)
    assert decision.labels == {"tier": "free", "team": "x"}


def test_to_dict_is_plain_json():
    decision = of(
        p("a", route={"model": "m", "regions": ["eu"]}, guardrails={"pii": {"action": "redact"}}),
        p("s", mode="shadow", tag={"x": "y"}),
    ).evaluate(ANY)
    data = decision.to_dict()
    assert data["decision"] == "allow"
    assert (data["model"], data["regions"], data["providers"], data["deny"]) == ("m", ["eu"], None, None)
    assert data["guardrails"] == {
        "pii": {"action": "redact", "stages": ["input", "output"], "settings": {}, "policy": "a"}
    }
    assert data["shadow"] == [{"policy": "s", "actions": {"tag": {"x": "y"}}}]
    denied = of(p("d", deny={"message": "no"})).evaluate(ANY).to_dict()
    assert denied["decision"] == "deny"
    assert denied["deny"] == {"status": 403, "code": "policy_denied", "message": "no", "policy": "d"}


def test_rule_9_the_first_cache_action_wins_whole():
    decision = of(
        p("a", 5, cache={"mode": "semantic", "min_score": 0.97}),
        p("b", 1, cache={"mode": "exact", "ttl_s": 60}),
    ).evaluate(ANY)
    assert decision.cache is not None
    assert (decision.cache.mode, decision.cache.ttl_s, decision.cache.min_score) == ("semantic", None, 0.97)
    assert decision.to_dict()["cache"] == {"mode": "semantic", "min_score": 0.97}
    assert of(p("a", tag={"x": "y"})).evaluate(ANY).cache is None
