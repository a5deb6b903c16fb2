"""The role matrix of gateway/identity/roles.py, endpoint by endpoint, with a virtual key of each role."""

from __future__ import annotations

import httpx
import pytest

from gateway.identity import roles
from tests.conftest import running

ADMIN = "sk-admin-bootstrap"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}

# (method, path, body, matrix route) for every endpoint that exists today.
CALLS = [
    ("POST", "/v1/chat/completions", CHAT, "POST /v1/chat/completions"),
    ("POST", "/v1/completions", {"model": "demo", "prompt": "hi"}, "POST /v1/completions"),
    ("POST", "/v1/embeddings", {"model": "demo-embedding", "input": "hi"}, "POST /v1/embeddings"),
    ("POST", "/v1/messages", {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
     "POST /v1/messages"),
    ("POST", "/v1/messages/count_tokens", {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
     "POST /v1/messages/count_tokens"),
    ("POST", "/v1/responses", {"model": "demo", "input": "hi"}, "POST /v1/responses"),
    ("GET", "/v1/responses/resp_none", None, "GET /v1/responses/{id}"),
    ("GET", "/v1/responses/resp_none/input_items", None, "GET /v1/responses/{id}/input_items"),
    ("DELETE", "/v1/responses/resp_none", None, "DELETE /v1/responses/{id}"),
    ("GET", "/v1/models", None, "GET /v1/models"),
    ("GET", "/admin/deployments", None, "GET /admin/deployments"),
    ("POST", "/admin/deployments/mock/demo-1/reset", None, "POST /admin/deployments/{id}/{action}"),
    ("GET", "/admin/keys", None, "GET /admin/keys"),
    ("POST", "/admin/keys", {"project": "p1"}, "POST /admin/keys"),
    ("GET", "/admin/usage", None, "GET /admin/usage"),
    ("GET", "/api/v1/policies", None, "GET /api/v1/policies"),
    ("GET", "/api/v1/policies/none", None, "GET /api/v1/policies/{name}"),
    ("GET", "/api/v1/policies/none/versions", None, "GET /api/v1/policies/{name}/versions"),
    ("POST", "/api/v1/policies/evaluate", {"request": CHAT}, "POST /api/v1/policies/evaluate"),
    ("POST", "/api/v1/policies", {"policy": {"name": "p", "actions": {"tag": {"a": "b"}}}}, "POST /api/v1/policies"),
    ("PUT", "/api/v1/policies/p", {"policy": {"actions": {"tag": {"a": "c"}}}}, "PUT /api/v1/policies/{name}"),
    ("POST", "/api/v1/policies/p/rollback", {"version": 1}, "POST /api/v1/policies/{name}/rollback"),
    ("DELETE", "/api/v1/policies/none", None, "DELETE /api/v1/policies/{name}"),
]  # fmt: skip


@pytest.mark.parametrize("role", ["admin", "developer", "viewer", "billing"])
def test_every_endpoint_answers_as_the_matrix_says(make_config, role):
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _):
        made = httpx.post(f"{url}/admin/keys", json={"project": "p1", "role": role},
                          headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
        key = made.json()["key"]
        made_id = made.json()["id"]
        calls = [*CALLS, ("POST", f"/admin/keys/{made_id}/rotate", {"grace_s": 60}, "POST /admin/keys/{id}/rotate")]
        calls.append(("POST", "/admin/keys/vk_missing/revoke", None, "POST /admin/keys/{id}/revoke"))
        calls.append(("PATCH", "/admin/keys/vk_missing", {"rpm": 1}, "PATCH /admin/keys/{id}"))
        for method, path, body, route in calls:
            response = httpx.request(method, f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"})
            if roles.allows(route, role):
                assert response.status_code in (200, 201, 404), (role, route, response.text)
            else:
                assert response.status_code == 403, (role, route, response.text)
                if not path.startswith("/v1/messages"):  # Anthropic's error shape has no code
                    assert response.json()["error"]["code"] == "role_not_allowed"


def test_admin_endpoints_need_a_key_even_in_mode_none(make_config):
    with running(make_config(auth={"mode": "none", "admin_key": ADMIN})) as (url, _):
        assert httpx.get(f"{url}/admin/keys").status_code == 401
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "route"),
    [("/v1/responses", {"model": "demo", "input": "hi"}, "POST /v1/responses"), (*CALLS[3][1:3], CALLS[3][3])],
)
def test_an_ingress_in_another_api_has_its_own_entry(make_config, monkeypatch, path, body, route):
    """/v1/messages and /v1/responses run the chat pipeline, but the matrix's entry is theirs."""
    monkeypatch.setitem(roles.PERMISSIONS, route, roles.ADMIN)
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _):
        made = httpx.post(f"{url}/admin/keys", json={"project": "p1", "role": "developer"},
                          headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
        key = made.json()["key"]
        assert httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 403
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200  # fmt: skip


def test_a_route_missing_from_the_matrix_is_admin_only():
    assert roles.allows("DELETE /admin/everything", "admin")
    assert not roles.allows("DELETE /admin/everything", "viewer")


def test_every_route_of_the_app_is_in_the_matrix(make_config):
    from gateway.app import build_app

    app = build_app(make_config())
    paths = {getattr(r, "path", "") for r in app.app.routes}
    listed = {route.split(" ", 1)[1] for route in roles.PERMISSIONS}
    normalised = {p.replace("{model_id:path}", "").rstrip("/") for p in paths}
    normalised = {p.replace("{deployment_id:path}", "{id}").replace("{key_id}", "{id}") for p in normalised}
    public = {"/health/live", "/health/ready", "/metrics"}
    # The console (/ui) is not a route of the matrix: each of its pages checks the API routes whose work it shows
    # (tests/console/ and tests/integration/test_console_http.py hold it to that).
    public.add("/ui")
    # routes whose last part is an action the matrix lists one by one
    by_action = {"/admin/keys/{id}/{action}", "/api/v1/policies/{name}/{action}"}
    assert normalised - public - by_action <= listed
