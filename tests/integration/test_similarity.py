"""Prompt similarity through the running gateway: repeated and reworded prompts are found off the request path,
and the analytics endpoint says what an exact or a semantic cache would have served, per project."""

from __future__ import annotations

import httpx

from tests.conftest import KEY, running
from tests.integration.helpers import sdk_client, user, wait_until

ADMIN = "sk-admin-bootstrap"
VIEWER = "sk-viewer-other"


def test_duplicates_are_found_and_reported_per_project(make_config):
    config = make_config(
        auth={"admin_key": ADMIN, "keys": [
            {"name": "tester", "key": KEY, "project": "p1"},
            {"name": "viewer", "key": VIEWER, "project": "p2", "role": "viewer"},
        ]},
        similarity={"enabled": True, "near_duplicate_threshold": 0.8},
        telemetry={"flush_interval_ms": 20},
    )  # fmt: skip
    with running(config) as (url, gateway):
        client = sdk_client(url)
        for prompt in ["How do I reset my password?", "How do I reset my password?",
                       "how do i reset my password please", "What is the capital of France?"]:  # fmt: skip
            client.chat.completions.create(model="demo", messages=user(prompt))
        assert wait_until(lambda: gateway.similarity is not None and gateway.similarity.processed >= 4)

        def stats(key: str, **params: str) -> dict:
            return httpx.get(f"{url}/api/v1/analytics/similarity", params=params,
                             headers={"Authorization": f"Bearer {key}"}).json()  # fmt: skip

        assert wait_until(lambda: stats(ADMIN, project="p1").get("requests") == 4)
        figures = stats(ADMIN, project="p1")
        assert figures["exact_duplicates"] == 1
        assert figures["near_duplicates"] >= 2  # the copy and the rewording
        assert 0 < figures["exact_cache_hit_rate"] <= figures["semantic_cache_hit_rate"] < 1
        other = stats(VIEWER, project="p1")  # a viewer reads its own project, whatever it asks
        assert other["project"] == "p2"
        assert other["requests"] == 0
        metrics = httpx.get(f"{url}/metrics").text
        assert "gateway_similarity_exact_duplicates_total 1.0" in metrics
