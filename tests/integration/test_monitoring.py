"""deploy/grafana/gateway-dashboard.json and deploy/prometheus/alerts.yaml ask for metrics the gateway has: every
PromQL expression in them parses, every metric it names is in a gateway's /metrics (a histogram's _bucket, _sum and
_count included), and every label it matches on or groups by is one of that metric's labels or one Prometheus
adds when it scrapes. The gateway is served with every part that has metrics (limits, policies, guardrails, the
cache, a breaker, a fallback) and exercised until they have samples."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import orjson
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import parse_config
from gateway.errors import Domain
from gateway.readiness import DEPLOYMENT_STATES, STATES
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import wait_until

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
# Labels that the scrape adds (Prometheus's own, the Prometheus Operator's from the Service and pod), and `le`.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
# Grafana's variables, replaced by what they expand to before the expression is parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$job": ".*",
                     "$namespace": ".*"}  # fmt: skip
# Families that may have no sample in the exercised gateway (so no label to check, only the name): each one's
# reason. Everything else the dashboard and the rules name must have been seen with its labels.
NOT_EXERCISED = {
    "gateway_telemetry_sink_errors": "a failed store write",
    "gateway_token_count_fallbacks": "an upstream without usage and no o200k_base file",
    "gateway_cache_errors": "a Redis cache that fails, or an answer too large",
    "gateway_ratelimit_backend_errors": "a Redis that fails",
}


# -- what the dashboard and the rules ask for ----------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel's target and every query variable (label_values(selector, label) gives its
    selector)."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    out = []
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    for panel in panels:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            out.append((f"variable {variable['name']}", match.group(1)))
    return out


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def expand(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def closed_label_values() -> dict[tuple[str, str], set[str]]:
    """The values some labels can take, from the code: an alert on a value that never comes would never fire."""
    emitted = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        emitted |= set(re.findall(r'"([a-z_]+)"', " ".join(re.findall(r"\.emit\(([^,]*),", path.read_text()))))
    return {
        ("gateway_events_total", "type"): emitted,
        ("gateway_errors_total", "domain"): set(get_args(Domain)),
        ("gateway_component_state", "state"): set(STATES),
        ("gateway_deployments", "state"): set(DEPLOYMENT_STATES),
    }


def matched_values(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, op, value) of each label matcher."""
    out: list[tuple[str, str, str, str]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            for m in node.matchers.matchers:
                out.append((node.name or "", m.name, str(m.op), m.value))
        return True

    promql_parser.walk(promql_parser.parse(expand(expr)), visit)
    return out


def test_matched_values_are_values_the_gateway_gives() -> None:
    closed = closed_label_values()
    assert {"breaker_open", "budget_soft_limit", "retry_budget_exhausted"} <= closed[("gateway_events_total", "type")]
    problems = []
    for where, expr in dashboard_queries() + alert_queries():
        for metric, label, op, value in matched_values(expr):
            values = closed.get((metric, label))
            if values is None:
                continue
            # =~ and !~: the regex must match a value the gateway gives; = and !=: be one. Else it is a typo.
            regex = "Re" in op
            hits = [v for v in values if (re.fullmatch(value, v) if regex else v == value)]
            if not hits:
                problems.append(f"{where}: {metric}{{{label} {op} {value!r}}} matches none of {sorted(values)}")
    assert not problems, "\n".join(problems)


def selectors(expr: str) -> list[tuple[str, set[str], set[str]]]:
    """(metric name, labels it matches on, labels grouped by above it) of each vector selector."""
    tree = promql_parser.parse(expand(expr))
    found: list[tuple[str, set[str], set[str]]] = []
    grouping: list[set[str]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.append(set(node.modifier.labels))
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            name = node.name or matchers.pop("__name__", "")
            matchers.pop("__name__", None)
            found.append((name, set(matchers), set().union(*grouping) if grouping else set()))
        return True

    promql_parser.walk(tree, visit)
    return found


def test_every_expression_parses() -> None:
    queries = dashboard_queries() + alert_queries()
    assert len(queries) > 40
    for where, expr in queries:
        try:
            promql_parser.parse(expand(expr))
        except ValueError as exc:
            pytest.fail(f"{where}: {exc}: {expr}")
        assert "$" not in expand(expr), f"{where}: a variable that is not expanded: {expr}"


# -- what the gateway has --------------------------------------------------------------------------------------------


POLICIES = """
policies:
  - name: tag-everything
    actions: {tag: {seen: "yes"}, guardrails: {pii: {action: log, stage: input}}}
"""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a gateway with limits, policies, guardrails, the cache, a breaker and a fallback, after requests
    that make each of them count something."""
    tmp = tmp_path_factory.mktemp("monitoring")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "all.yaml").write_text(POLICIES)
    data = merge(base_config(tmp), {
        "pipeline": ["auth", "policy", "ratelimit", "guardrails", "cache", "route"],
        "providers": {"mock": {"type": "mock"}},
        "models": {
            "broken": {"deployments": [{"provider": "mock", "model": "demo-error-500"}], "fallbacks": ["demo"]},
        },
        "routing": {"retries": 0, "breaker": {"consecutive_failures": 1, "cooldown_s": 600}},
        "policies": {"paths": [str(tmp / "policies")]},
        "limits": {"rules": [{"scope": "key", "rpm": 6, "budget_usd": 100}]},
        "cache": {"backend": "memory"},
        "features": {"defaults": {"cache": "exact"}},
    })  # fmt: skip
    config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
    headers = {"authorization": f"Bearer {KEY}"}
    chat = {"model": "demo", "temperature": 0, "messages": [{"role": "user", "content": "mail me at a@example.com"}]}
    with running(config) as (url, gateway), httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200  # a miss, stored
        assert client.post("/v1/chat/completions", json=chat).status_code == 200  # a hit
        streamed = client.post("/v1/chat/completions", json={**chat, "stream": True, "temperature": 1})
        assert streamed.status_code == 200
        assert client.post("/v1/chat/completions", json={**chat, "model": "broken"}).status_code == 200  # fallback
        assert client.post("/v1/chat/completions", json={**chat, "model": "nope"}).status_code == 404
        statuses = [client.post("/v1/chat/completions", json={**chat, "seed": i}).status_code for i in range(6)]
        assert 429 in statuses, statuses  # the rpm limit
        client.get("/health/ready")  # the components' states
        # The records reach the store (the outbox's counters) before the scrape.
        assert wait_until(lambda: gateway.metrics.registry.get_sample_value(
            "gateway_sink_records_total", {"sink": "store", "outcome": "sent"}) or False)  # fmt: skip
        exposition = client.get("/metrics").text
        # The broken deployment's breaker opened (one failure, a 600 s cooldown) and is counted as open.
        assert 'gateway_deployments{state="open"} 1.0' in exposition
        yield exposition


def families(exposition: str) -> dict[str, tuple[set[str], set[str] | None]]:
    """name -> (the sample names it exposes, the labels seen on its samples: None when it has none)."""
    out: dict[str, tuple[set[str], set[str] | None]] = {}
    for family in text_string_to_metric_families(exposition):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""],
                    "summary": ["", "_sum", "_count"]}.get(family.type, [""])  # fmt: skip
        names = {family.name + s for s in suffixes}
        labels = set().union(*(set(s.labels) for s in family.samples)) if family.samples else None
        out[family.name] = (names, labels)
    return out


def test_every_metric_asked_for_is_in_metrics(exposition: str) -> None:
    known = families(exposition)
    by_sample = {sample: family for family, (samples, _) in known.items() for sample in samples}
    problems = []
    for where, expr in dashboard_queries() + alert_queries():
        for name, matched, grouped in selectors(expr):
            family = by_sample.get(name)
            if family is None:
                problems.append(f"{where}: {name} is not in /metrics")
                continue
            labels = known[family][1]
            if labels is None:
                if family not in NOT_EXERCISED:
                    problems.append(f"{where}: {name} has no sample: exercise it, or list it in NOT_EXERCISED")
                continue
            for label in matched - labels - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label!r} (it has {sorted(labels)})")
            # A label grouped by must come from some selector of the expression, or from the scrape.
            everywhere = set().union(
                *(known[by_sample[n]][1] or set() for n, _, _ in selectors(expr) if n in by_sample)
            )
            for label in grouped - everywhere - TARGET_LABELS:
                problems.append(f"{where}: grouped by {label!r}, which no metric of it has")
    assert not problems, "\n".join(problems)


def test_not_exercised_lists_only_metrics_that_exist(exposition: str) -> None:
    known = families(exposition)
    assert set(NOT_EXERCISED) <= set(known)


def test_the_dashboard_covers_what_operators_watch() -> None:
    """Each part the deployment guide promises a panel for names its metrics somewhere in the dashboard."""
    names = {name for _, expr in dashboard_queries() for name, _, _ in selectors(expr)}
    for part, metric in [
        ("traffic", "gateway_requests_total"),
        ("errors by fault domain", "gateway_errors_total"),
        ("latency", "gateway_request_duration_seconds_bucket"),
        ("overhead", "gateway_overhead_seconds_bucket"),
        ("tokens", "gateway_tokens_total"),
        ("cost", "gateway_cost_usd_total"),
        ("limits", "gateway_ratelimit_rejected_total"),
        ("breakers", "gateway_events_total"),
        ("guardrails", "gateway_guardrail_checks_total"),
        ("telemetry outboxes", "gateway_sink_records_total"),
        ("spool", "gateway_sink_spool_bytes"),
        ("cache", "gateway_cache_requests_total"),
    ]:
        assert metric in names, f"no panel for {part} ({metric})"


def test_the_dashboard_is_importable() -> None:
    """What Grafana's import needs: unique panel ids, a uid, a Prometheus data source variable used by every panel."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
