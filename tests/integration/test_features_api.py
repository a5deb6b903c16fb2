"""Content logging and feature flags through the running gateway: per project from the config, switched through
/api/v1/features (admins only, read per project), and applied to the next request."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from tests.conftest import KEY, running
from tests.integration.helpers import record_of, sdk_client, user, wait_until

ADMIN = "sk-admin-bootstrap"
OTHER = "sk-other-project"
VIEWER = "sk-viewer-p1"


def _config(make_config, **overrides):
    return make_config(
        auth={"admin_key": ADMIN, "keys": [
            {"name": "tester", "key": KEY, "project": "p1"},
            {"name": "other", "key": OTHER, "project": "p2"},
            {"name": "viewer", "key": VIEWER, "project": "p1", "role": "viewer"},
        ]},
        telemetry={"content": {"mode": "off", "max_chars": 200}},
        features={"projects": {"p1": {"content_logging": "full"}, "p2": {"content_logging": "redacted"}}},
        **overrides,
    )  # fmt: skip


def _api(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})


def test_content_is_logged_per_project_full_redacted_or_not_at_all(make_config, db_path: Path):
    with running(_config(make_config)) as (url, _):
        prompt = "Write to jane@example.org about the invoice"
        sdk_client(url).chat.completions.create(
            model="demo", messages=user(prompt), extra_headers={"x-request-id": "c1"}
        )
        sdk_client(url, OTHER).chat.completions.create(
            model="demo", messages=user(prompt), extra_headers={"x-request-id": "c2"}
        )
        stream = sdk_client(url).chat.completions.create(
            model="demo", messages=user("stream me"), stream=True, extra_headers={"x-request-id": "c3"}
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        full, redacted, streamed_record = (record_of(db_path, i) for i in ("c1", "c2", "c3"))
    assert full["content_input"] == f"user: {prompt}"
    assert full["content_output"]  # the mock's answer, whole
    assert redacted["content_input"] == "user: Write to [EMAIL] about the invoice"
    assert streamed_record["content_output"] == streamed
    assert len(full["content_output"]) <= 200 + len("…[truncated]")


def test_flags_are_switched_through_the_api_and_apply_to_the_next_request(make_config, db_path: Path):
    priced = {"gpt-4o-mini": {"deployments": [{"provider": "mock", "model": "gpt-4o-mini"}]}}
    with (
        running(_config(make_config, models=priced)) as (url, gateway),
        _api(url, ADMIN) as admin,
        _api(url, VIEWER) as viewer,
        _api(url, KEY) as developer,
    ):
        seen = viewer.get("/api/v1/features", params={"project": "p2"}).json()
        assert seen["project"] == "p1"  # a viewer reads its own project, whatever it asks
        assert seen["flags"]["content_logging"] == {"value": "full", "source": "config:project"}
        assert developer.put("/api/v1/features/cost_tracking", json={"value": False}).status_code == 403
        bad = admin.put("/api/v1/features/content_logging", json={"value": "everything", "project": "p1"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "value"
        assert admin.put("/api/v1/features/nope", json={"value": True}).json()["error"]["param"] == "flag"

        changed = admin.put("/api/v1/features/content_logging", json={"value": "off", "project": "p1"})
        assert changed.status_code == 200
        assert changed.json()["source"] == "api:project"
        assert admin.put("/api/v1/features/cost_tracking", json={"value": False, "project": "p1"}).status_code == 200
        client = sdk_client(url)
        client.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), extra_headers={"x-request-id": "f1"})
        sdk_client(url, OTHER).chat.completions.create(
            model="gpt-4o-mini", messages=user("hi"), extra_headers={"x-request-id": "f2"}
        )
        record, other = record_of(db_path, "f1"), record_of(db_path, "f2")
        assert record["content_input"] == ""
        assert record["cost_usd"] is None
        assert other["cost_usd"] > 0
        assert other["content_input"] == "user: hi"

        removed = admin.delete("/api/v1/features/content_logging", params={"project": "p1"})
        assert removed.json()["value"] == "full"  # the config's value again
        assert gateway.features.content_mode("p1") == "full"


def test_the_embedding_deployment_path_embeds_prompts_through_the_router(make_config):
    config = make_config(similarity={"enabled": True, "embedding_model": "demo-embedding"})
    with running(config) as (url, gateway):
        client = sdk_client(url)
        for text in ["reset my password", "reset my password", "what is the weather in Paris"]:
            client.chat.completions.create(model="demo", messages=user(text))
        worker = gateway.similarity
        assert worker is not None
        assert wait_until(lambda: worker.processed >= 3)
        # The mock deployment's vectors have 16 dimensions; the local embedding's have more.
        assert worker._projects["p1"].dim == 16
        import asyncio

        found = asyncio.run(worker.nearest("p1", "reset my password", k=5, min_score=0.99))
        assert len(found) == 2
        assert all(score == 1.0 for _, score in found)
        assert np.isclose(found[0][1], 1.0)
