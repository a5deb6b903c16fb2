"""The policy filter end to end: the shipped policies through the real SDK, hot reload under load, and what the
record keeps."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import KEY, ROOT, running
from tests.integration.helpers import assert_sdk_error, record_of, sdk_client, user, wait_until

FREE = "sk-free-plan"
EU = "sk-eu-region"
CLINICAL = "sk-clinical"

KEYS = [
    {"name": "tester", "key": KEY, "project": "p1", "team": "t1"},
    {"name": "free", "key": FREE, "project": "p1", "metadata": {"plan": "free"}},
    {"name": "eu", "key": EU, "project": "p1", "metadata": {"region": "eu"}},
    {"name": "nurse", "key": CLINICAL, "project": "clinical"},
]


@pytest.fixture
def shipped(make_config, upstream):
    """The shipped policies in front of an in-process upstream (which records what it is sent)."""
    url, up = upstream
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{url}/v1", "api_key": "sk-up"}, "mock": {"type": "mock"}},
        models={
            "gpt-4o": {"deployments": [{"provider": "up", "model": "gpt-4o"}]},
            "gpt-4o-mini": {"deployments": [{"provider": "up", "model": "gpt-4o-mini"}]},
            "demo": {"deployments": [{"provider": "mock", "model": "demo-1"}]},
            "eu-only": {
                "deployments": [
                    {"provider": "up", "model": "eu-1", "region": "eu"},
                    {"provider": "up", "model": "us-1", "region": "us"},
                ]
            },
        },
        pipeline=["auth", "policy", "ratelimit", "guardrails", "route"],
        auth={"keys": KEYS},
        policies={"paths": [str(ROOT / "policies")]},
    )
    return config, up


def test_cost_tiering_serves_the_small_model_and_records_the_original(shipped, tmp_path: Path):
    config, up = shipped
    with running(config) as (url, _):
        client = sdk_client(url, key=FREE)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("hi"), max_tokens=4000)
        answer = raw.parse()
        sent = up.requests[-1]["body"]
        assert sent["model"] == "gpt-4o-mini"
        assert sent["max_tokens"] == 1024  # the plan's cap
        assert answer.model == "gpt-4o-mini"
        record = record_of(tmp_path / "gateway.db", raw.headers["x-request-id"])
        tags = orjson.loads(record["tags"])
        assert tags["model_original"] == "gpt-4o"
        assert tags["tier"] == "free"
        assert "free-plan-small-model" in tags["policies"]
        assert record["model_requested"] == "gpt-4o-mini" or record["model_requested"] == "gpt-4o"


def test_prompt_cap_answers_400_with_the_policy_code(shipped):
    config, up = shipped
    with running(config) as (url, _):
        client = sdk_client(url, key=FREE)
        before = len(up.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=user("word " * 20_000))
        body = assert_sdk_error(caught.value, 400)
        assert body["code"] == "prompt_too_long"
        assert len(up.requests) == before  # refused before any upstream call


def test_eu_principal_is_served_in_the_eu_and_refused_when_none_is_healthy(shipped):
    config, up = shipped
    with running(config) as (url, gateway):
        client = sdk_client(url, key=EU)
        for _ in range(5):
            client.chat.completions.create(model="eu-only", messages=user("hi"))
            assert up.requests[-1]["body"]["model"] == "eu-1"
        # gpt-4o has no EU deployment: a clear 403, nothing sent elsewhere
        before = len(up.requests)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=user("hi"))
        body = assert_sdk_error(caught.value, 403)
        assert body["code"] == "no_compliant_deployment"
        assert "eu-residency" in body["message"]
        assert "regions: eu" in body["message"]
        assert len(up.requests) == before
        # a non-EU key still reaches every deployment
        assert sdk_client(url).chat.completions.create(model="gpt-4o", messages=user("hi")).model == "gpt-4o"


def test_shadow_policy_records_without_acting(shipped, tmp_path: Path):
    config, _ = shipped
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    with running(config) as (url, _):
        raw = sdk_client(url, key=FREE).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("hi"), tools=tools
        )
        assert raw.status_code == 200
        tags = orjson.loads(record_of(tmp_path / "gateway.db", raw.headers["x-request-id"])["tags"])
        assert tags["policies_shadow"] == "shadow-deny-tools-on-free"
        metrics = httpx.get(f"{url}/metrics").text
        assert 'gateway_policy_decisions_total{outcome="shadow",policy="shadow-deny-tools-on-free"} 1.0' in metrics


def test_no_policy_paths_means_no_change(make_config, upstream):
    url_up, up = upstream
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{url_up}/v1", "api_key": "sk-up"}},
        models={"gpt-4o": {"deployments": [{"provider": "up", "model": "gpt-4o"}]}},
        pipeline=["auth", "policy", "route"],
    )
    with running(config) as (url, _):
        sdk_client(url).chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=5000)
        assert up.requests[-1]["body"]["max_tokens"] == 5000


POLICY_V1 = """
policies:
  - name: cap
    actions:
      rewrite: {max_tokens: 100}
"""
POLICY_V2 = POLICY_V1.replace("100", "50")


def test_a_changed_file_applies_within_two_seconds_under_load_and_a_broken_one_keeps_the_last(
    make_config, upstream, tmp_path: Path
):
    url_up, up = upstream
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "cap.yaml").write_text(POLICY_V1)
    config = make_config(
        providers={"up": {"type": "openai", "base_url": f"{url_up}/v1", "api_key": "sk-up"}},
        models={"gpt-4o": {"deployments": [{"provider": "up", "model": "gpt-4o"}]}},
        pipeline=["auth", "policy", "route"],
        policies={"paths": [str(folder)], "poll_interval_s": 0.2},
    )
    with running(config) as (url, gateway):
        failures: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    r = http.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o", "messages": user("x"),
                                  "max_tokens": 1000}, headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
                    if r.status_code != 200:
                        failures.append(r.status_code)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load) for _ in range(4)]
            assert wait_until(lambda: len(up.requests) > 20)
            assert up.requests[-1]["body"]["max_tokens"] == 100
            (folder / "cap.yaml").write_text(POLICY_V2)
            assert wait_until(lambda: up.requests[-1]["body"]["max_tokens"] == 50)  # picked up, however busy
            # a broken file: the previous set stays, the metric and readiness say so
            (folder / "cap.yaml").write_text(POLICY_V2 + "      bogus: 1\n")
            assert wait_until(lambda: gateway.policies.error != "")
            count = len(up.requests)
            assert wait_until(lambda: len(up.requests) > count + 10)
            assert up.requests[-1]["body"]["max_tokens"] == 50
            stop.set()
            for worker in workers:
                worker.result()
        assert failures == []
        ready = httpx.get(f"{url}/health/ready").json()
        assert "cap.yaml" in ready["checks"]["policies"]
        assert "bogus" in ready["checks"]["policies"]
        assert "gateway_policy_reload_failed 1.0" in httpx.get(f"{url}/metrics").text
        (folder / "cap.yaml").write_text(POLICY_V1)
        assert wait_until(lambda: gateway.policies.error == "")
        assert "gateway_policy_reload_failed 0.0" in httpx.get(f"{url}/metrics").text


def test_a_policy_limit_replaces_the_key_limit_on_the_same_counter(make_config, tmp_path: Path):
    folder = tmp_path / "limit-policies"
    folder.mkdir()
    (folder / "limit.yaml").write_text(
        "policies: [{name: demo-cap, match: {model: demo}, actions: {limit: {rpm: 2}}}]\n"
    )
    admin = "sk-admin-bootstrap"
    config = make_config(
        pipeline=["auth", "policy", "ratelimit", "route"],
        auth={"admin_key": admin},
        policies={"paths": [str(folder)]},
    )
    with running(config) as (url, _):
        made = httpx.post(f"{url}/admin/keys", json={"project": "p1", "rpm": 3},
                          headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
        client = sdk_client(url, key=made.json()["key"])
        for _ in range(2):  # the policy's 2 a minute, on the key's own counter
            client.chat.completions.create(model="demo", messages=user("hi"))
        # the same counter, now under the key's own 3 a minute: what the policy's requests took is taken
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="slow-stream", messages=user("hi"))
