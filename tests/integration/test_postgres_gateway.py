"""The gateway on a PostgreSQL store: virtual keys created, used, cached and revoked, API policies, and the
request records, all through the running gateway."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import running
from tests.integration.helpers import wait_until
from tests.services import drop_schema, postgres_fetch, require_postgres

ADMIN = "sk-admin-bootstrap"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    dsn = require_postgres()
    name = f"gw_it_{uuid.uuid4().hex[:10]}"
    yield dsn, name
    drop_schema(dsn, name)


def test_virtual_keys_policies_and_records_on_postgres(make_config, schema):
    dsn, name = schema
    config = make_config(
        pipeline=["auth", "policy", "route"],
        auth={"admin_key": ADMIN, "cache_ttl_s": 0.3, "negative_cache_ttl_s": 0.2},
        telemetry={"store": f"{dsn}?schema={name}", "flush_interval_ms": 20},
        policies={"poll_interval_s": 0.2},
    )
    with running(config) as (url, _):
        made = httpx.post(f"{url}/admin/keys", json={"project": "pg", "rpm": 100}, headers=auth(ADMIN))
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        rows = postgres_fetch(dsn, f"SELECT key_hash, project FROM {name}.virtual_keys WHERE id = '{key_id}'")
        assert rows[0]["project"] == "pg"
        assert key not in rows[0]["key_hash"]  # only the digest is kept

        answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(key))
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        assert wait_until(
            lambda: bool(postgres_fetch(dsn, f"SELECT 1 FROM {name}.model_cost_logs WHERE id = '{request_id}'")), 3
        )
        record = postgres_fetch(
            dsn, f"SELECT project, key_id, guardrails FROM {name}.model_cost_logs WHERE id = '{request_id}'"
        )
        assert (record[0]["project"], record[0]["key_id"]) == ("pg", key_id)

        policy = {"name": "cap", "actions": {"deny": {"status": 403, "code": "closed", "message": "closed"}}}
        assert httpx.post(f"{url}/api/v1/policies", json={"policy": policy}, headers=auth(ADMIN)).status_code == 201
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 403
        assert httpx.delete(f"{url}/api/v1/policies/cap", headers=auth(ADMIN)).status_code == 200
        history = httpx.get(f"{url}/api/v1/policies/cap/versions", headers=auth(ADMIN)).json()["data"]
        assert [v["deleted"] for v in history] == [True, False]

        assert httpx.post(f"{url}/admin/keys/{key_id}/revoke", headers=auth(ADMIN)).status_code == 200
        # This worker forgets a key it revoked at once: no wait for the cache TTL.
        refused = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(key))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "key_revoked"
