"""Virtual keys through the admin API and the CLI, against a gateway on loopback and its real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.cli import main
from tests.clock import FakeClock
from tests.conftest import base_config, merge, running
from tests.integration.helpers import assert_error_shape

ADMIN = "sk-admin-bootstrap"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def config(make_config):
    return make_config(auth={"admin_key": ADMIN, "cache_ttl_s": 0.5, "negative_cache_ttl_s": 0.2})


def create(url: str, **fields: object) -> dict:
    response = httpx.post(f"{url}/admin/keys", json=fields, headers=auth(ADMIN))
    assert response.status_code == 201, response.text
    return response.json()


def chat(url: str, key: str, model: str = "demo") -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model}, headers=auth(key))


def test_lifecycle_through_the_api(config, tmp_path: Path):
    with running(config) as (url, gateway):
        made = create(url, name="ci", project="p1", team="t1", role="developer", rpm=60, budget_usd="50/month",
                      metadata={"plan": "pro", "region": "eu"})  # fmt: skip
        key = made["key"]
        assert key.startswith("sk-gw-")
        assert len(key) == len("sk-gw-") + 32
        assert made["key_prefix"] == key[:14]
        assert (made["budget_usd"], made["budget_period"], made["rpm"]) == (50.0, "month", 60)
        assert chat(url, key).status_code == 200
        listed = httpx.get(f"{url}/admin/keys", headers=auth(ADMIN)).json()["data"]
        assert [k["id"] for k in listed] == [made["id"]]
        assert "key" not in listed[0]
        assert "key_hash" not in listed[0]

        rotated = httpx.post(f"{url}/admin/keys/{made['id']}/rotate", headers=auth(ADMIN))
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["key"]
        assert rotated.json()["rotated_from"] == made["id"]
        assert rotated.json()["metadata"] == {"plan": "pro", "region": "eu"}
        assert chat(url, new_key).status_code == 200
        # No grace asked: the old key is revoked at once (this worker forgets it at once too).
        assert_error_shape(chat(url, key), 401, code="key_revoked")

        revoked = httpx.post(f"{url}/admin/keys/{rotated.json()['id']}/revoke", headers=auth(ADMIN))
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert_error_shape(chat(url, new_key), 401, code="key_revoked")
        assert gateway.identity.cache is not None

    # The store never holds a key: not in any column, not anywhere in the file.
    db = tmp_path / "gateway.db"
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("gateway.db*"))
    assert key.encode() not in raw
    assert new_key.encode() not in raw
    with sqlite3.connect(db) as conn:
        hashes = {row[0] for row in conn.execute("SELECT key_hash FROM virtual_keys")}
    assert all(len(h) == 64 for h in hashes)


def test_rotation_with_a_grace_period_keeps_the_old_key_for_a_while(config):
    with running(config) as (url, _):
        made = create(url, project="p1")
        rotated = httpx.post(f"{url}/admin/keys/{made['id']}/rotate", json={"grace_s": 60}, headers=auth(ADMIN))
        assert chat(url, made["key"]).status_code == 200
        assert chat(url, rotated.json()["key"]).status_code == 200


def test_hot_path_reads_the_store_once_per_ttl_and_caches_bad_keys(make_config):
    config = make_config(auth={"admin_key": ADMIN, "cache_ttl_s": 30, "negative_cache_ttl_s": 30})
    with running(config) as (url, gateway):
        key = create(url, project="p1")["key"]
        cache = gateway.identity.cache
        assert cache is not None
        before = cache.queries
        for _ in range(20):
            assert chat(url, key).status_code == 200
            assert_error_shape(chat(url, "sk-gw-not-a-key"), 401, code="invalid_api_key")
        assert cache.queries - before == 2  # one miss each, then the cache answers


def write_config(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(merge(base_config(tmp_path), overrides)))
    return path


def cli_create(path: Path, capsys, *args: str) -> str:
    assert main(["keys", "create", "--config", str(path), *args]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_cli_create_list_revoke_takes_effect_within_the_ttl(tmp_path: Path, make_config, capsys):
    path = write_config(tmp_path)
    key = cli_create(path, capsys, "--project", "p", "--team", "t", "--role", "developer", "--rpm", "60",
                     "--budget-usd", "50/month", "--name", "n", "--models", "demo", "--expires-days", "2")  # fmt: skip
    assert main(["keys", "list", "--config", str(path)]) == 0
    listed = [yaml.safe_load(line) for line in capsys.readouterr().out.splitlines()]
    assert len(listed) == 1
    assert (listed[0]["project"], listed[0]["rpm"], listed[0]["budget_usd"]) == ("p", 60, 50.0)
    assert listed[0]["allowed_models"] == ["demo"]
    ttl = 0.5
    with running(make_config(auth={"cache_ttl_s": ttl})) as (url, gateway):
        clock = FakeClock()  # the cache's time moves only when the test says: no race with a busy machine
        assert gateway.identity.cache is not None
        gateway.identity.cache.clock = clock.monotonic
        assert chat(url, key).status_code == 200
        assert_error_shape(chat(url, key, "demo-embedding"), 403, code="model_not_allowed")
        assert main(["keys", "revoke", listed[0]["id"], "--config", str(path)]) == 0  # in the store, not this worker
        clock.advance(ttl - 0.01)
        assert chat(url, key).status_code == 200  # the worker's cached copy, until the TTL
        clock.advance(0.02)
        assert_error_shape(chat(url, key), 401, code="key_revoked")  # read again past the TTL


def test_expired_key_is_refused(config):
    with running(config) as (url, gateway):
        made = create(url, project="p1", expires_at=time.time() + 3600)
        assert chat(url, made["key"]).status_code == 200
        gateway.identity.clock = lambda: time.time() + 3601  # an hour later, without waiting for it
        error = assert_error_shape(chat(url, made["key"]), 401, code="key_expired")
        assert "expired" in error["message"]


def test_allowed_models_are_enforced(config):
    with running(config) as (url, _):
        key = create(url, project="p1", allowed_models=["demo"])["key"]
        assert chat(url, key).status_code == 200
        error = assert_error_shape(chat(url, key, "slow-stream"), 403, code="model_not_allowed")
        assert error["type"] == "permission_error"


def test_bad_fields_are_named(config):
    with running(config) as (url, _):
        for fields, param in (({"role": "root"}, "role"), ({"budget_usd": "5/week"}, "budget_period"),
                              ({"rpm": -1}, "rpm"), ({"colour": "red"}, "colour")):  # fmt: skip
            response = httpx.post(f"{url}/admin/keys", json=fields, headers=auth(ADMIN))
            assert assert_error_shape(response, 400)["param"] == param


def test_project_isolation_on_the_key_list(config):
    with running(config) as (url, _):
        create(url, project="a", name="a-dev")
        create(url, project="b", name="b-dev")
        viewer_a = create(url, project="a", role="viewer")["key"]
        seen = httpx.get(f"{url}/admin/keys", headers=auth(viewer_a)).json()["data"]
        assert {k["project"] for k in seen} == {"a"}
        # Asking for another project changes nothing for a non-admin.
        seen = httpx.get(f"{url}/admin/keys?project=b", headers=auth(viewer_a)).json()["data"]
        assert {k["project"] for k in seen} == {"a"}
        admin_b = httpx.get(f"{url}/admin/keys?project=b", headers=auth(ADMIN)).json()["data"]
        assert [k["name"] for k in admin_b] == ["b-dev"]
        developer_a = create(url, project="a")["key"]
        assert_error_shape(httpx.get(f"{url}/admin/keys", headers=auth(developer_a)), 403, code="role_not_allowed")


def test_an_edit_changes_models_limits_and_budget_at_once(make_config):
    config = make_config(auth={"admin_key": ADMIN}, pipeline=["auth", "ratelimit", "route"])
    with running(config) as (url, _):
        made = create(url, name="app", project="p1", allowed_models=["demo"], budget_usd="5/day")
        key = made["key"]
        assert chat(url, key).status_code == 200

        def patch(key_id: str, **fields: object) -> httpx.Response:
            return httpx.patch(f"{url}/admin/keys/{key_id}", json=fields, headers=auth(ADMIN))

        edited = patch(made["id"], allowed_models=["slow-stream"], rpm=1, budget_usd=7.5, name="app-2")
        assert edited.status_code == 200, edited.text
        body = edited.json()
        assert (body["allowed_models"], body["rpm"], body["budget_usd"]) == (["slow-stream"], 1, 7.5)
        assert (body["budget_period"], body["name"], body["key_prefix"]) == ("day", "app-2", made["key_prefix"])
        assert "key" not in body
        # This worker forgets the cached key at once: the new models hold for the same key.
        assert_error_shape(chat(url, key), 403, code="model_not_allowed")
        assert patch(made["id"], allowed_models=[]).json()["allowed_models"] == []  # all models
        assert chat(url, key).status_code == 200
        assert_error_shape(chat(url, key), 429)  # rpm 1
        listed = httpx.get(f"{url}/admin/keys", headers=auth(ADMIN)).json()["data"]
        assert (listed[0]["rpm"], listed[0]["budget_usd"]) == (1, 7.5)

        for fields, param in (({"project": "p2"}, "project"), ({"role": "admin"}, "role"), ({"rpm": -1}, "rpm"),
                              ({"budget_usd": "5/week"}, "budget_period"), ({"colour": "red"}, "colour")):  # fmt: skip
            assert assert_error_shape(patch(made["id"], **fields), 400)["param"] == param
        assert_error_shape(patch("vk_missing", rpm=1), 404)
        httpx.post(f"{url}/admin/keys/{made['id']}/revoke", headers=auth(ADMIN))
        assert_error_shape(patch(made["id"], rpm=5), 400)
        viewer = create(url, project="p1", role="viewer")["key"]
        forged = httpx.patch(f"{url}/admin/keys/{made['id']}", json={"rpm": 0}, headers=auth(viewer))
        assert_error_shape(forged, 403, code="role_not_allowed")
