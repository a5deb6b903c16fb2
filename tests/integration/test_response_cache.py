"""The response cache through the official openai and anthropic SDKs: hits whole and streamed (an answer cached
from a stream served whole, and the other way round), in each ingress's format; bypasses; two projects that never
share; records that tell the truth; purge; and the Redis backend shared by two gateways, and its outage."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import anthropic
import httpx
import pytest
import redis

from gateway.config import GatewayConfig
from gateway.runtime import Gateway
from tests.conftest import KEY, running
from tests.faults import FaultyProxy
from tests.integration.helpers import record_of, sdk_client, sse_payloads, user, wait_until
from tests.servers import Upstream
from tests.services import require_redis

pytestmark = pytest.mark.sdk

P2_KEY = "sk-project-two"
ADMIN_KEY = "sk-cache-admin"
MODEL = "gpt-4o-mini"


@dataclass
class Cached:
    url: str
    gateway: Gateway
    upstream: Upstream
    db_path: Path

    def calls(self) -> int:
        return len(self.upstream.requests)


def overrides(up_url: str, **cache: Any) -> dict[str, Any]:
    return {
        "providers": {"up": {"type": "openai", "base_url": f"{up_url}/v1", "api_key": "sk-upstream"}},
        "models": {name: {"deployments": [{"provider": "up", "model": name}]} for name in (MODEL, "nousage")},
        "pipeline": ["auth", "cache", "route"],
        "auth": {
            "keys": [
                {"name": "tester", "key": KEY, "project": "p1"},
                {"name": "other", "key": P2_KEY, "project": "p2"},
                {"name": "admin", "key": ADMIN_KEY, "project": "ops", "role": "admin"},
            ]
        },
        "features": {"defaults": {"cache": "exact"}},
        "cache": cache,
    }


@pytest.fixture
def cached(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], db_path: Path
) -> Iterator[Cached]:
    up_url, up = upstream
    with running(make_config(**overrides(up_url))) as (url, gateway):
        yield Cached(url, gateway, up, db_path)


def ask(url: str, key: str = KEY, text: str = "What is 2 + 2?", **options: Any) -> Any:
    with sdk_client(url, key) as client:
        options.setdefault("temperature", 0)
        return client.chat.completions.with_raw_response.create(model=MODEL, messages=user(text), **options)


def stream_text(raw: Any) -> tuple[str, Any]:
    """The streamed text and the usage of a raw streamed SDK answer."""
    text, usage = "", None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    return text, usage


def test_a_repeated_request_is_served_from_the_cache_whole_with_the_same_answer(cached: Cached):
    first = ask(cached.url)
    assert first.headers["x-gateway-cache"] == "miss"
    assert wait_until(lambda: cached.gateway.cache is not None and cached.gateway.cache.backend.bytes > 0)  # type: ignore[union-attr]
    second = ask(cached.url)
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.headers["x-gateway-cache-key"] == first.headers["x-gateway-cache-key"]
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content == "Hello there!"
    assert second.parse().usage.total_tokens == 14
    assert cached.calls() == 1


def test_a_streamed_request_is_replayed_from_a_whole_answer_and_a_streamed_answer_serves_whole(cached: Cached):
    ask(cached.url)  # cached whole
    streamed = ask(cached.url, stream=True, stream_options={"include_usage": True})
    assert streamed.headers["x-gateway-cache"] == "hit"
    text, usage = stream_text(streamed)
    assert text == "Hello there!"
    assert usage.total_tokens == 14
    record = record_of(cached.db_path, streamed.headers["x-gateway-request-id"])
    assert (record["cache"], record["usage_source"], record["total_tokens"], record["stream"]) == (
        "hit",
        "cache",
        14,
        1,
    )
    # An answer first streamed is assembled and cached: the same question asked whole is a hit.
    miss = ask(cached.url, text="Say hi", stream=True)
    assert miss.headers["x-gateway-cache"] == "miss"
    assert stream_text(miss)[0] == "Hello there!"
    assert wait_until(lambda: ask(cached.url, text="Say hi").headers["x-gateway-cache"] == "hit", timeout=10)
    assert cached.calls() == 2


def test_a_streamed_hit_ends_with_usage_and_done_on_the_wire(cached: Cached):
    ask(cached.url)
    body = {"model": MODEL, "messages": user("What is 2 + 2?"), "temperature": 0, "stream": True}
    response = httpx.post(f"{cached.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    payloads = sse_payloads(response.text)
    assert response.headers["x-gateway-cache"] == "hit"
    assert payloads[-1] == "[DONE]"
    assert '"usage"' not in response.text  # not asked for: stripped, as an upstream's would be


def test_anthropic_messages_hits_are_whole_and_streamed_in_anthropics_format(cached: Cached):
    with anthropic.Anthropic(base_url=cached.url, api_key=KEY, max_retries=0, timeout=10) as client:
        # This SDK has no temperature argument any more: sent as the API still takes it.
        ask_: Any = {"model": MODEL, "max_tokens": 50, "extra_body": {"temperature": 0}}
        ask_["messages"] = [{"role": "user", "content": "Hi?"}]
        first = client.messages.with_raw_response.create(**ask_)
        assert first.headers["x-gateway-cache"] == "miss"
        assert wait_until(
            lambda: client.messages.with_raw_response.create(**ask_).headers["x-gateway-cache"] == "hit", timeout=10
        )
        hit = client.messages.with_raw_response.create(**ask_)
        message = hit.parse()
        assert message.content[0].text == "Hello there!"
        assert message.usage.output_tokens == 3
        with client.messages.stream(**ask_) as stream:
            events = [event.type for event in stream]
            final = stream.get_final_message()
        assert events[0] == "message_start"
        assert events[-1] == "message_stop"
        assert final.content[0].text == "Hello there!"  # type: ignore[union-attr]
    assert cached.calls() == 1


def test_the_responses_api_is_served_from_the_cache(cached: Cached):
    with sdk_client(cached.url) as client:
        first = client.responses.with_raw_response.create(model=MODEL, input="Hello?", temperature=0, store=False)
        assert first.headers["x-gateway-cache"] == "miss"
        assert wait_until(
            lambda: (
                client.responses.with_raw_response.create(
                    model=MODEL, input="Hello?", temperature=0, store=False
                ).headers["x-gateway-cache"]
                == "hit"
            ),
            timeout=10,
        )
        streamed = client.responses.create(model=MODEL, input="Hello?", temperature=0, store=False, stream=True)
        kinds = [event.type for event in streamed]
        assert kinds[-1] == "response.completed"
        assert first.parse().output_text == "Hello there!"
    assert cached.calls() == 1


def test_two_projects_never_share_an_answer(cached: Cached):
    ask(cached.url)
    assert wait_until(lambda: ask(cached.url).headers["x-gateway-cache"] == "hit", timeout=10)
    assert ask(cached.url, key=P2_KEY).headers["x-gateway-cache"] == "miss"
    assert cached.calls() == 2


def test_no_store_and_nondeterministic_requests_bypass_the_cache(cached: Cached):
    ask(cached.url)
    assert wait_until(lambda: ask(cached.url).headers["x-gateway-cache"] == "hit", timeout=10)
    calls = cached.calls()
    assert ask(cached.url, extra_headers={"cache-control": "no-store"}).headers["x-gateway-cache"] == "bypass"
    assert ask(cached.url, extra_headers={"x-gateway-cache": "bypass"}).headers["x-gateway-cache"] == "bypass"
    assert ask(cached.url, temperature=0.7).headers["x-gateway-cache"] == "bypass"
    refreshed = ask(cached.url, extra_headers={"cache-control": "no-cache"})
    assert refreshed.headers["x-gateway-cache"] == "bypass"
    assert cached.calls() == calls + 4


def test_records_say_hit_or_miss_the_record_served_and_the_cost_saved(cached: Cached):
    first = ask(cached.url)
    assert wait_until(lambda: ask(cached.url).headers["x-gateway-cache"] == "hit", timeout=10)
    hit = ask(cached.url)
    miss_id, hit_id = first.headers["x-gateway-request-id"], hit.headers["x-gateway-request-id"]
    miss, served = record_of(cached.db_path, miss_id), record_of(cached.db_path, hit_id)
    assert miss["cache"] == "miss"
    assert miss["cost_usd"] > 0
    assert miss["saved_usd"] is None
    assert served["cache"] == "hit"
    assert served["cache_source_id"] == miss_id
    assert served["cost_usd"] == 0
    assert served["saved_usd"] == pytest.approx(miss["cost_usd"])
    assert served["total_tokens"] == 14
    assert served["usage_source"] == "cache"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    response = httpx.get(
        f"{cached.url}/api/v1/analytics/cache", params={"group_by": "model", "project": "p1"}, headers=admin
    )
    assert response.status_code == 200, response.text
    (row,) = response.json()["data"]
    assert row["group"] == MODEL
    assert row["hits"] >= 2
    assert row["misses"] == 1
    assert row["hit_rate"] == pytest.approx(row["hits"] / (row["hits"] + 1))
    assert row["saved_usd"] == pytest.approx(row["hits"] * miss["cost_usd"])


def test_with_cost_tracking_off_a_miss_records_no_cost_and_its_hits_still_say_what_they_saved(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], db_path: Path
):
    # The cache computes a miss's cost for its entry (what each hit saves): the record does not take it over.
    up_url, up = upstream
    settings = overrides(up_url)
    settings["features"]["defaults"]["cost_tracking"] = False
    with running(make_config(**settings)) as (url, _):
        first = ask(url)
        assert wait_until(lambda: ask(url).headers["x-gateway-cache"] == "hit", timeout=10)
        miss = record_of(db_path, first.headers["x-gateway-request-id"])
        served = record_of(db_path, ask(url).headers["x-gateway-request-id"])
    assert miss["cache"] == "miss"
    assert miss["cost_usd"] is None
    assert served["cache"] == "hit"
    assert served["cost_usd"] == 0
    assert served["saved_usd"] > 0


def test_purge_removes_a_projects_or_one_keys_entries_for_admins_only(cached: Cached):
    first = ask(cached.url)
    ask(cached.url, text="Another question")
    assert wait_until(lambda: ask(cached.url).headers["x-gateway-cache"] == "hit", timeout=10)
    purge = f"{cached.url}/admin/cache/purge"
    refused = httpx.post(purge, json={"project": "p1"}, headers={"authorization": f"Bearer {KEY}"})
    assert refused.status_code == 403
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.post(purge, json={}, headers=admin).status_code == 400
    assert httpx.post(purge, json={"key": "*"}, headers=admin).status_code == 400
    one = httpx.post(purge, json={"key": first.headers["x-gateway-cache-key"]}, headers=admin)
    assert one.json()["removed"] == 1
    assert ask(cached.url).headers["x-gateway-cache"] == "miss"
    assert wait_until(lambda: ask(cached.url).headers["x-gateway-cache"] == "hit", timeout=10)
    assert httpx.post(purge, json={"project": "p1"}, headers=admin).json()["removed"] == 2
    assert ask(cached.url, text="Another question").headers["x-gateway-cache"] == "miss"


def test_a_policy_turns_the_cache_on_for_what_it_matches(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], tmp_path: Path
):
    policy = tmp_path / "cache.yaml"
    policy.write_text(
        "policies:\n  - name: cache-p2\n    match:\n      project: p2\n"
        "    actions:\n      cache: {mode: exact, ttl_s: 60}\n"
    )
    up_url, up = upstream
    config = overrides(up_url)
    config["features"] = {}
    config["pipeline"] = ["auth", "policy", "cache", "route"]
    config["policies"] = {"paths": [str(policy)]}
    with running(make_config(**config)) as (url, _):
        assert "x-gateway-cache" not in ask(url).headers  # p1: off
        ask(url, key=P2_KEY)
        assert wait_until(lambda: ask(url, key=P2_KEY).headers["x-gateway-cache"] == "hit", timeout=10)


# -- Redis ------------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    url = require_redis()
    redis.Redis.from_url(url).flushdb()
    return url


def test_a_second_gateway_serves_what_the_first_cached_in_redis(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], redis_url: str
):
    up_url, up = upstream
    config = make_config(**overrides(up_url, backend=redis_url))
    with running(config) as (first, _), running(config) as (second, _):
        assert ask(first).headers["x-gateway-cache"] == "miss"
        assert wait_until(lambda: ask(second).headers["x-gateway-cache"] == "hit", timeout=10)
        assert ask(first, key=P2_KEY).headers["x-gateway-cache"] == "miss"  # shared, never across projects
    assert len(up.requests) == 2


def test_a_redis_outage_skips_the_cache_and_says_so_and_requests_go_on(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], redis_url: str
):
    up_url, up = upstream
    with FaultyProxy.before(redis_url) as proxy:
        config = make_config(**overrides(up_url, backend=proxy.url(redis_url), timeout_ms=200, retry_interval_s=0.5))
        with running(config) as (url, gateway):
            assert ask(url).headers["x-gateway-cache"] == "miss"
            assert wait_until(lambda: ask(url).headers["x-gateway-cache"] == "hit", timeout=10)
            proxy.freeze()  # Redis hangs: every call waits for an answer that never comes
            answer = ask(url)
            assert answer.parse().choices[0].message.content == "Hello there!"
            assert answer.headers["x-gateway-cache"] == "miss"
            ready = httpx.get(f"{url}/health/ready").json()
            assert ready["checks"]["cache"].startswith("skipped: ")
            metrics = httpx.get(f"{url}/metrics").text
            assert re.search(r'gateway_cache_errors_total\{reason="unavailable"\} [1-9]', metrics)
            assert re.search(r"gateway_cache_available 0", metrics)
            proxy.thaw()
            assert wait_until(lambda: ask(url).headers["x-gateway-cache"] == "hit", timeout=15)
            assert httpx.get(f"{url}/health/ready").json()["checks"]["cache"] == "ok"


class Match(NamedTuple):
    key: str
    score: float


class FakeIndex:
    """The semantic index's shape (gateway/cache/index.py): any other wording in the same scope of the same project
    matches at 0.97, never across projects or scopes."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], list[tuple[str, str]]] = {}

    async def lookup(self, project: str, scope: str, text: str, min_score: float) -> Match | None:
        for earlier, key in self.entries.get((project, scope), []):
            if earlier != text and min_score <= 0.97:
                return Match(key, 0.97)
        return None

    async def add(self, project: str, scope: str, text: str, key: str, ttl_s: float) -> None:
        self.entries.setdefault((project, scope), []).append((text, key))

    async def purge(self, project: str, scope: str | None = None) -> int:
        return 0

    async def close(self) -> None:
        return None

    def health(self) -> str:
        return ""


def test_semantic_mode_serves_another_wording_with_its_score_never_another_projects(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream]
):
    up_url, up = upstream
    config = overrides(up_url)
    config["features"] = {"defaults": {"cache": "semantic"}}
    with running(make_config(**config)) as (url, gateway):
        assert gateway.cache is not None
        index = gateway.cache.semantic = FakeIndex()
        gateway.cache.semantic_min_score = 0.9
        first = ask(url, text="What is 2 + 2?")
        assert first.headers["x-gateway-cache"] == "miss"
        assert wait_until(lambda: bool(index.entries))
        other = ask(url, text="How much is two plus two?")
        assert other.headers["x-gateway-cache"] == "semantic-hit"
        assert other.headers["x-gateway-cache-score"] == "0.9700"
        assert other.headers["x-gateway-cache-key"] == first.headers["x-gateway-cache-key"]
        assert other.parse().choices[0].message.content == "Hello there!"
        assert ask(url, key=P2_KEY, text="How much is two plus two?").headers["x-gateway-cache"] == "miss"
        # Another system prompt is another scope: the index is not even asked to compare.
        with sdk_client(url) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, temperature=0, messages=[{"role": "system", "content": "Be terse."}, *user("2+2?")]
            )
        assert raw.headers["x-gateway-cache"] == "miss"
    assert len(up.requests) == 3


def test_the_configured_semantic_index_serves_a_paraphrase_and_refuses_another_number(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream]
):
    """The real index, as the runtime builds it from cache.semantic (no fake): a reworded question is a semantic
    hit at the default min_score, the same question about another number goes upstream (the veto)."""
    up_url, up = upstream
    config = overrides(up_url)
    config["features"] = {"defaults": {"cache": "semantic"}}
    with running(make_config(**config)) as (url, gateway):
        assert gateway.cache is not None
        assert gateway.cache.semantic_min_score == gateway.config.cache.semantic.min_score == 0.5
        index = gateway.cache.semantic
        first = ask(url, text="What is the capital city of France?")
        assert first.headers["x-gateway-cache"] == "miss"
        assert wait_until(lambda: index.index.entries("p1") == 1)  # type: ignore[union-attr]  # added by the writer
        other = ask(url, text="Could you tell me what the capital city of France is, please?")
        assert other.headers["x-gateway-cache"] == "semantic-hit"
        assert float(other.headers["x-gateway-cache-score"]) >= 0.5
        assert ask(url, text="What was the capital city of France in 1790?").headers["x-gateway-cache"] == "miss"
        assert ask(url, key=P2_KEY, text="What is the capital city of France?").headers["x-gateway-cache"] == "miss"
    assert len(up.requests) == 3


def test_a_rate_limit_counts_a_hit_as_a_request_but_not_its_tokens(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream]
):
    up_url, _ = upstream
    config = overrides(up_url)
    config["pipeline"] = ["auth", "ratelimit", "cache", "route"]
    config["limits"] = {"algorithm": "sliding-window", "rules": [{"scope": "project", "rpm": 1000, "tpm": 1_000_000}]}
    with running(make_config(**config)) as (url, _):
        assert ask(url).headers["x-gateway-cache"] == "miss"
        # The memory backend keeps an answer before it is sent: the next request finds it.
        assert [ask(url).headers["x-gateway-cache"] for _ in range(3)] == ["hit"] * 3
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        usage = httpx.get(f"{url}/admin/usage", params={"scope": "project", "id": "p1"}, headers=admin).json()
        remaining = {limit["name"]: limit["remaining"] for limit in usage["rate_limits"]}
        assert remaining["rpm"] == 1000 - 4
        assert remaining["tpm"] == 1_000_000 - 14  # the miss's tokens only


def test_hits_and_misses_are_counted_in_the_metrics_under_their_model(cached: Cached):
    ask(cached.url)
    ask(cached.url)
    metrics = httpx.get(f"{cached.url}/metrics").text
    assert re.search(r'gateway_cache_requests_total\{result="hit"\} 1\.0', metrics)
    assert re.search(r'gateway_cache_requests_total\{result="miss"\} 1\.0', metrics)
    assert re.search(r"gateway_cache_served_bytes_total [1-9]", metrics)
    assert f'model="{MODEL}",provider="none"' in metrics  # the hit, under its model group, served by no provider


def test_embeddings_and_legacy_completions_are_served_from_the_cache(cached: Cached):
    with sdk_client(cached.url) as client:
        first = client.embeddings.with_raw_response.create(model=MODEL, input="hello")  # deterministic as it is
        assert first.headers["x-gateway-cache"] == "miss"
        again = client.embeddings.with_raw_response.create(model=MODEL, input="hello")
        assert again.headers["x-gateway-cache"] == "hit"
        assert again.parse().data[0].embedding == first.parse().data[0].embedding == [0.1, 0.2]
        done = client.completions.with_raw_response.create(model=MODEL, prompt="Say", temperature=0)
        assert done.headers["x-gateway-cache"] == "miss"
        streamed = client.completions.with_raw_response.create(model=MODEL, prompt="Say", temperature=0, stream=True)
        assert streamed.headers["x-gateway-cache"] == "hit"
        assert "".join(chunk.choices[0].text for chunk in streamed.parse() if chunk.choices) == "done"
    assert cached.calls() == 2


def test_a_policys_min_score_raises_the_indexs_never_lowers_it(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], tmp_path: Path
):
    policy = tmp_path / "semantic.yaml"
    policy.write_text(
        "policies:\n"
        "  - {name: strict, match: {project: p1}, actions: {cache: {mode: semantic, min_score: 0.99}}}\n"
        "  - {name: loose, match: {project: p2}, actions: {cache: {mode: semantic, min_score: 0.5}}}\n"
    )
    up_url, _ = upstream
    config = overrides(up_url)
    config["features"] = {}
    config["pipeline"] = ["auth", "policy", "cache", "route"]
    config["policies"] = {"paths": [str(policy)]}
    with running(make_config(**config)) as (url, gateway):
        assert gateway.cache is not None
        index = gateway.cache.semantic = FakeIndex()  # matches at 0.97
        gateway.cache.semantic_min_score = 0.9
        for key in (KEY, P2_KEY):
            ask(url, key=key, text="What is 2 + 2?")
        assert wait_until(lambda: len(index.entries) == 2)
        assert ask(url, text="How much is two plus two?").headers["x-gateway-cache"] == "miss"  # asked at 0.99
        assert ask(url, key=P2_KEY, text="How much is two plus two?").headers["x-gateway-cache"] == "semantic-hit"


def test_redis_entries_expire_by_their_ttl(
    make_config: Callable[..., GatewayConfig], upstream: tuple[str, Upstream], redis_url: str
):
    up_url, _ = upstream
    with running(make_config(**overrides(up_url, backend=redis_url, ttl_s=2))) as (url, _):
        ask(url)
        assert wait_until(lambda: ask(url).headers["x-gateway-cache"] == "hit", timeout=10)
        (name,) = redis.Redis.from_url(redis_url).keys("gw:cache:*")
        assert 0 < redis.Redis.from_url(redis_url).pttl(name) <= 2000
        assert wait_until(lambda: not redis.Redis.from_url(redis_url).exists(name), timeout=10)
        assert ask(url).headers["x-gateway-cache"] == "miss"
