"""Two tenants (projects p1 and p2) sending each other's ids, raw and encoded, to every endpoint that takes one:
stored responses and their input items, previous_response_id, traces and their exports, usage by key, team and
project, and the lists filtered by another project. Nothing of p1 reaches p2's keys, whichever role they have;
every answer is a refusal (403/404, or a 307 to the same path without its slash), never a 5xx."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from gateway.config import parse_config
from tests.conftest import ROOT, base_config, merge, running

KEYS = [
    {"name": "dev1", "key": "sk-dev1", "project": "p1", "team": "t1"},
    {"name": "dev2", "key": "sk-dev2", "project": "p2", "team": "t2"},
    {"name": "view2", "key": "sk-view2", "project": "p2", "role": "viewer"},
    {"name": "bill2", "key": "sk-bill2", "project": "p2", "role": "billing", "team": "t2"},
    {"name": "admin", "key": "sk-admin", "role": "admin"},
]
SECRET = "secret-of-p1"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def variants(ident: str) -> dict[str, str]:
    """An id as a path segment, as a hostile client might spell it."""
    quote = urllib.parse.quote
    return {
        "raw": ident,
        "upper": ident.upper(),
        "every byte escaped": "".join(f"%{ord(c):02X}" for c in ident),
        "escaped twice": quote(quote(ident, safe=""), safe=""),
        "trailing space": ident + "%20",
        "trailing NUL": ident + "%00",
        "trailing slash": ident + "/",
        "leading tab": "%09" + ident,
        "dot segment": "./" + ident,
        "parameter": ident + ";x",
    }


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("tenants")
    overrides: dict[str, Any] = {
        "auth": {"keys": KEYS},
        "pipeline": ["auth", "ratelimit", "route"],
        "limits": {"rules": [{"scope": "key", "rpm": 1000}, {"scope": "project", "budget_usd": 100}]},
    }
    config = parse_config(
        yaml.safe_dump(merge(base_config(tmp), overrides)), source="t.yaml", env=os.environ, base_dir=str(ROOT)
    )
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        stored = client.post("/v1/responses", json={"model": "demo", "input": SECRET}, headers=auth("sk-dev1"))
        chat = {"model": "demo", "messages": [{"role": "user", "content": SECRET}]}
        answered = client.post("/v1/chat/completions", json=chat, headers=auth("sk-dev1"))
        key = client.post("/admin/keys", json={"name": "vk1", "project": "p1"}, headers=auth("sk-admin"))
        ids = {
            "response": stored.json()["id"],
            "trace": answered.headers["x-gateway-request-id"],
            "key": key.json()["id"],
        }
        deadline = time.monotonic() + 10
        while client.get(f"/api/v1/traces/{ids['trace']}", headers=auth("sk-admin")).status_code != 200:
            assert time.monotonic() < deadline, "the record never reached the store"
            time.sleep(0.05)
        yield client, ids


def refused(answer: httpx.Response) -> bool:
    same_path = answer.status_code == 307 and not answer.headers["location"].endswith("/")
    return (answer.status_code in (400, 403, 404) or same_path) and SECRET not in answer.text


@pytest.mark.parametrize("spelling", list(variants("x")))
def test_another_tenants_ids_in_the_path_are_refused(two_tenants: Any, spelling: str) -> None:
    client, ids = two_tenants
    response, trace = variants(ids["response"])[spelling], variants(ids["trace"])[spelling]
    calls = [
        ("GET", f"/v1/responses/{response}", "sk-dev2"),
        ("GET", f"/v1/responses/{response}/input_items", "sk-dev2"),
        ("DELETE", f"/v1/responses/{response}", "sk-dev2"),
        ("GET", f"/api/v1/traces/{trace}", "sk-view2"),
        ("GET", f"/api/v1/traces/{trace}/export", "sk-view2"),
        ("GET", f"/api/v1/traces/{trace}/export?format=csv", "sk-view2"),
    ]
    for method, path, key in calls:
        answer = client.request(method, path, headers=auth(key))
        assert refused(answer), (method, path, answer.status_code, answer.text[:200])
    assert client.get(f"/v1/responses/{ids['response']}", headers=auth("sk-dev1")).status_code == 200  # still there


@pytest.mark.parametrize("previous", ["raw", "upper", "trailing space"])
def test_another_tenants_response_is_no_previous_response(two_tenants: Any, previous: str) -> None:
    client, ids = two_tenants
    rid = {"raw": ids["response"], "upper": ids["response"].upper(), "trailing space": ids["response"] + " "}[previous]
    body = {"model": "demo", "input": "what did I say?", "previous_response_id": rid}
    answer = client.post("/v1/responses", json=body, headers=auth("sk-dev2"))
    assert answer.status_code == 404
    assert SECRET not in answer.text


def test_another_tenants_usage_and_lists_are_refused_or_empty(two_tenants: Any) -> None:
    client, ids = two_tenants
    for scope, ident in [("key", ids["key"]), ("key", ids["key"].upper()), ("key", " " + ids["key"]), ("key", "dev1"),
                         ("key", "sk-dev1"), ("project", "p1"), ("project", "P1"), ("project", "p1 "), ("team", "t1"),
                         ("team", "t1 ")]:  # fmt: skip
        answer = client.get("/admin/usage", params={"scope": scope, "id": ident}, headers=auth("sk-bill2"))
        assert answer.status_code in (403, 404), (scope, ident, answer.text)
    queries = [f"?id={ids['trace']}", "?project=p1", f"?project=p1&id={ids['trace']}", f"?request_id={ids['trace']}",
               "?project=%70%31", "?project=p1&project=p2", "?project=p2&project=p1"]  # fmt: skip
    paths = ["/api/v1/traces", "/api/v1/traces/export", "/api/v1/usage", "/api/v1/analytics/cost",
             "/api/v1/analytics/similarity", "/admin/keys", "/api/v1/features", "/api/v1/policies"]  # fmt: skip
    for path in paths:
        for query in queries:
            answer = client.get(path + query, headers=auth("sk-view2"))
            assert answer.status_code < 500, (path, query, answer.text)
            assert SECRET not in answer.text, (path, query, answer.text[:300])
            assert '"p1"' not in answer.text, (path, query, answer.text[:300])
