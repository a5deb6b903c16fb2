"""/api/v1/policies: versions with author and time, conflicts, rollback, dry runs, roles, and a policy saved on one
gateway process in force on another within seconds."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEY, ROOT, running
from tests.integration.helpers import assert_error_shape
from tests.servers import gateway_process

ADMIN = "sk-admin-bootstrap"
VIEWER_A = "sk-viewer-a"
VIEWER_B = "sk-viewer-b"
DEVELOPER = KEY

KEYS = [
    {"name": "tester", "key": KEY, "project": "p1", "team": "t1"},
    {"name": "viewer-a", "key": VIEWER_A, "project": "a", "role": "viewer"},
    {"name": "viewer-b", "key": VIEWER_B, "project": "b", "role": "viewer"},
]
CAP = {"name": "cap", "description": "a cap", "actions": {"rewrite": {"max_tokens": 256}}}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}


def headers(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def config(make_config, tmp_path: Path):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "files.yaml").write_text(
        "policies:\n"
        "  - {name: from-file, actions: {tag: {origin: file}}}\n"
        "  - {name: project-a-only, match: {project: a}, actions: {tag: {p: a}}}\n"
        "  - {name: project-b-only, match: {project: b}, actions: {deny: {message: b secret}}}\n"
        "  - {name: b-by-when, when: {field: project, eq: b}, actions: {tag: {p: b}}}\n"
    )
    return make_config(
        pipeline=["auth", "policy", "route"],
        auth={"admin_key": ADMIN, "keys": KEYS},
        policies={"paths": [str(folder)], "poll_interval_s": 0.2},
    )


def test_create_update_conflict_history_rollback_delete(config):
    with running(config) as (url, gateway):
        api = f"{url}/api/v1/policies"
        created = httpx.post(api, json={"policy": CAP}, headers=headers())
        assert created.status_code == 201, created.text
        assert (created.json()["version"], created.json()["author"]) == (1, "admin")
        assert gateway.policies.current.policies  # in force at once on this process
        listed = {p["name"]: p for p in httpx.get(api, headers=headers()).json()["data"]}
        assert listed["cap"]["origin"] == "api"
        assert listed["cap"]["version"] == 1
        assert listed["from-file"]["read_only"] is True

        again = httpx.post(api, json={"policy": CAP}, headers=headers())
        assert_error_shape(again, 409, code="conflict")
        v2 = httpx.put(f"{api}/cap", json={"yaml": "name: cap\nactions: {rewrite: {max_tokens: 128}}\n",
                                           "expected_version": 1}, headers=headers())  # fmt: skip
        assert v2.status_code == 200, v2.text
        assert v2.json()["version"] == 2
        stale = httpx.put(f"{api}/cap", json={"policy": CAP, "expected_version": 1}, headers=headers())
        assert_error_shape(stale, 409, code="conflict")

        history = httpx.get(f"{api}/cap/versions", headers=headers()).json()["data"]
        assert [v["version"] for v in history] == [2, 1]
        assert all(v["author"] == "admin" and v["created_at"] > time.time() - 60 for v in history)

        rolled = httpx.post(f"{api}/cap/rollback", json={"version": 1}, headers=headers())
        assert rolled.status_code == 200
        assert rolled.json()["version"] == 3
        assert rolled.json()["rolled_back_to"] == 1
        explained = httpx.post(f"{api}/evaluate", json={"request": CHAT}, headers=headers()).json()
        assert explained["decision"]["rewrite"]["max_tokens"] == 256

        deleted = httpx.delete(f"{api}/cap", headers=headers())
        assert deleted.status_code == 200
        assert deleted.json()["deleted"] is True
        names = [p["name"] for p in httpx.get(api, headers=headers()).json()["data"]]
        assert "cap" not in names
        assert_error_shape(httpx.delete(f"{api}/cap", headers=headers()), 404)
        assert_error_shape(httpx.delete(f"{api}/from-file", headers=headers()), 409)


def test_a_policy_that_would_not_load_is_refused_and_not_stored(config):
    with running(config) as (url, gateway):
        api = f"{url}/api/v1/policies"
        bad_regex = {"name": "bad", "when": {"field": "model", "regex": "("}, "actions": {"tag": {"a": "b"}}}
        error = assert_error_shape(httpx.post(api, json={"policy": bad_regex}, headers=headers()), 400,
                                   code="invalid_policy")  # fmt: skip
        assert "regex" in error["message"]
        clash = httpx.post(api, json={"policy": {"name": "from-file", "actions": {"tag": {"a": "b"}}}},
                           headers=headers())  # fmt: skip
        assert clash.status_code == 409
        unknown_setting = {"name": "x", "actions": {"guardrails": {"injection": {"action": "log", "treshold": 1}}}}
        error = assert_error_shape(httpx.post(api, json={"policy": unknown_setting}, headers=headers()), 400)
        assert "treshold" in error["message"]
        assert httpx.get(f"{api}/bad/versions", headers=headers()).json()["data"] == []
        assert_error_shape(httpx.post(api, content=b"{not json", headers=headers()), 400)


def test_roles_and_project_isolation(config):
    with running(config) as (url, _):
        api = f"{url}/api/v1/policies"
        assert_error_shape(httpx.get(api, headers=headers(DEVELOPER)), 403, code="role_not_allowed")
        assert_error_shape(httpx.post(api, json={"policy": CAP}, headers=headers(VIEWER_A)), 403)
        assert_error_shape(httpx.get(api), 401)
        seen_a = {p["name"] for p in httpx.get(api, headers=headers(VIEWER_A)).json()["data"]}
        seen_b = {p["name"] for p in httpx.get(api, headers=headers(VIEWER_B)).json()["data"]}
        assert seen_a == {"from-file", "project-a-only"}
        assert seen_b == {"from-file", "project-b-only"}  # b-by-when reads the project in `when`: admin only
        assert_error_shape(httpx.get(f"{api}/project-a-only", headers=headers(VIEWER_B)), 404)
        assert_error_shape(httpx.get(f"{api}/project-b-only/versions", headers=headers(VIEWER_A)), 404)
        # a dry run is made as someone of the caller's own project, and shows only what the caller may see
        probe = httpx.post(f"{api}/evaluate", headers=headers(VIEWER_A),
                           json={"request": CHAT, "principal": {"project": "b"}}).json()  # fmt: skip
        assert probe["facts"]["project"] == "a"
        assert probe["decision"]["deny"] is None
        assert "b secret" not in str(probe)
        assert {s["policy"] for s in probe["steps"]} <= seen_a
        dry = httpx.post(f"{api}/evaluate", headers=headers(VIEWER_A),
                         json={"request": CHAT, "principal": {"project": "a"}})  # fmt: skip
        assert dry.status_code == 200
        steps = {s["policy"]: s for s in dry.json()["steps"]}
        assert steps["project-a-only"]["matched"] is True


def test_a_policy_saved_on_one_process_reaches_another_within_five_seconds(tmp_path: Path):
    shared = {
        "pipeline": ["auth", "policy", "route"],
        "auth": {"admin_key": ADMIN},
        "policies": {"paths": [], "poll_interval_s": 1.0},
        "telemetry": {
            "store": f"sqlite:///{tmp_path / 'shared.db'}",
            "pricing_file": str(ROOT / "config/pricing.yaml"),
        },
    }
    with (
        gateway_process(tmp_path, name="one", **shared) as (one, _),
        gateway_process(tmp_path, name="two", **shared) as (two, _),
    ):
        deny = {"name": "deny-all", "actions": {"deny": {"status": 403, "code": "closed", "message": "closed"}}}
        assert httpx.post(f"{one}/api/v1/policies", json={"policy": deny}, headers=headers()).status_code == 201
        saved_at = time.monotonic()
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        while True:
            answer = httpx.post(f"{two}/v1/chat/completions", json=chat, headers=headers(KEY))
            if answer.status_code == 403:
                break
            assert time.monotonic() - saved_at < 60, "the second process did not pick the policy up"
            time.sleep(0.1)
        assert_error_shape(answer, 403, code="closed")
