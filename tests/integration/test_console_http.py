"""The console over plain HTTP: its headers, sign-in's checks, and /ui gone when console.enabled is false."""

from __future__ import annotations

import re

import httpx

from tests.conftest import KEY, running

ADMIN = "sk-admin-http"


def _form(client: httpx.Client, credential: str) -> httpx.Response:
    page = client.get("/ui/signin")
    pre = page.cookies["gw_console_pre"]
    return client.post("/ui/signin", data={"csrf": pre, "credential": credential, "next": "/ui/health"})


def test_console_pages_carry_a_strict_csp_and_refuse_framing(make_config):
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _), httpx.Client(base_url=url) as client:
        for path in ("/ui/signin", "/ui/static/console.css", "/ui/static/htmx.min.js"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "style-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert answer.headers["x-frame-options"] == "DENY"
        assert client.get("/ui/signin").headers["cache-control"] == "no-store"
        # The /v1 path is untouched by the console: no console header there.
        models = client.get("/v1/models", headers={"authorization": f"Bearer {ADMIN}"})
        assert "content-security-policy" not in models.headers


def test_sign_in_needs_its_form_token_and_a_valid_key(make_config):
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _), httpx.Client(base_url=url) as client:
        assert _form(client, "sk-nope").status_code == 401
        assert client.post("/ui/signin", data={"credential": ADMIN}).status_code == 403  # no form token
        answer = _form(client, ADMIN)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/health"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert ADMIN not in cookie
        assert client.get("/ui/health").status_code == 200
        # An open redirect is not offered.
        client.cookies.clear()
        page = client.get("/ui/signin")
        pre = page.cookies["gw_console_pre"]
        out = client.post("/ui/signin", data={"csrf": pre, "credential": ADMIN, "next": "//evil.example/ui/"})
        assert out.headers["location"] == "/ui/"


def test_a_revoked_key_ends_its_console_session(make_config):
    config = make_config(auth={"admin_key": ADMIN, "cache_ttl_s": 0, "negative_cache_ttl_s": 0})
    with running(config) as (url, _), httpx.Client(base_url=url) as client:
        auth = {"authorization": f"Bearer {ADMIN}"}
        created = client.post("/admin/keys", json={"name": "v", "role": "viewer"}, headers=auth).json()
        assert _form(client, created["key"]).status_code == 303
        assert client.get("/ui/health").status_code == 200
        client.post(f"/admin/keys/{created['id']}/revoke", headers=auth)
        answer = client.get("/ui/health")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/ui/signin")


def test_console_off_means_no_ui_route(make_config):
    """Every route the console mounts (read from the app built with it on), with each of its methods, is the app's
    plain 404 when console.enabled is false: not the console's page, not a redirect to sign in."""
    from starlette.routing import Mount, Route, WebSocketRoute

    from gateway.app import build_app

    (mount,) = [r for r in build_app(make_config()).app.routes if isinstance(r, Mount) and r.path == "/ui"]
    routes = mount.app.app.routes  # SecurityHeaders(Router)
    calls = []
    for route in routes:
        path = "/ui" + re.sub(r"\{[^}]+\}", "x", route.path)
        if isinstance(route, Route):
            calls += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
        elif isinstance(route, WebSocketRoute):
            calls.append(("GET", path))
        else:
            calls.append(("GET", path + "/console.css"))  # the static files
    assert len(calls) >= 30
    with running(make_config(console={"enabled": False})) as (url, _):
        for method, path in [*calls, ("GET", "/ui"), ("GET", "/ui/")]:
            answer = httpx.request(method, f"{url}{path}", headers={"authorization": f"Bearer {KEY}"})
            assert answer.status_code == 404, (method, path, answer.status_code)
            assert answer.headers["content-type"].startswith("application/json"), (method, path)  # the app's 404
        assert httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_billing_sees_its_projects_budget_and_a_viewer_does_not(make_config):
    keys = [
        {"name": "billing-1", "key": "sk-billing-1", "project": "p1", "role": "billing"},
        {"name": "viewer-1", "key": "sk-viewer-1", "project": "p1", "role": "viewer"},
    ]
    config = make_config(
        pipeline=["auth", "ratelimit", "route"],
        limits={"rules": [{"scope": "project", "budget_usd": 100, "period": "day"}]},
        auth={"admin_key": ADMIN, "keys": keys},
    )
    with running(config) as (url, _):
        with httpx.Client(base_url=url) as billing:
            assert _form(billing, "sk-billing-1").status_code == 303
            page = billing.get("/ui/spend")
            assert page.status_code == 200
            assert "Budgets and limits of project p1" in page.text
            assert "$100.0000" in page.text
        with httpx.Client(base_url=url) as viewer:
            assert _form(viewer, "sk-viewer-1").status_code == 303
            page = viewer.get("/ui/spend")
            assert page.status_code == 200
            assert "Budgets and limits" not in page.text


def test_a_shadow_policy_shows_how_often_it_would_have_acted(make_config):
    config = make_config(pipeline=["auth", "policy", "route"], auth={"admin_key": ADMIN})
    with running(config) as (url, _), httpx.Client(base_url=url) as client:
        policy = {"name": "would-deny", "mode": "shadow", "match": {"model": "demo"}, "actions": {"deny": {}}}
        auth = {"authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/policies", json={"policy": policy}, headers=auth).status_code == 201
        chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):
            answer = client.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {KEY}"})
            assert answer.status_code == 200  # shadow: recorded, not applied
        assert _form(client, ADMIN).status_code == 303
        page = client.get("/ui/policies").text
        row = page[page.index("would-deny") : page.index("</tr>", page.index("would-deny"))]
        assert "0 · 0 · 2" in row


PRICED = {"deployments": [{"provider": "mock", "model": "demo-1", "price": {"input": 1000, "output": 1000}}]}


def test_an_admin_resets_a_projects_budget_from_the_console(make_config):
    config = make_config(
        pipeline=["auth", "ratelimit", "route"],
        models={"demo": PRICED},
        limits={"rules": [{"scope": "project", "budget_usd": 100, "period": "day"}]},
        auth={"admin_key": ADMIN},
    )
    admin = {"authorization": f"Bearer {ADMIN}"}
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20}
    with running(config) as (url, _), httpx.Client(base_url=url) as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {KEY}"}).is_success

        def spent() -> float:
            usage = client.get("/admin/usage", params={"scope": "project", "id": "p1"}, headers=admin).json()
            return float(usage["budgets"][0]["spend_usd"])

        assert spent() > 0
        billing = client.post("/admin/keys", json={"project": "p1", "role": "billing"}, headers=admin).json()["key"]
        refused = client.post(
            "/admin/usage/reset", json={"scope": "project", "id": "p1"}, headers={"authorization": f"Bearer {billing}"}
        )
        assert refused.status_code == 403
        assert _form(client, ADMIN).status_code == 303
        page = client.get("/ui/spend", params={"project": "p1"})
        assert "Reset the budgets of project p1" in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        done = client.post("/ui/spend/reset", data={"csrf": csrf, "project": "p1"})
        assert done.status_code == 303
        assert spent() == 0
        assert 'gateway_events_total{type="usage_reset"} 1.0' in client.get("/metrics").text


def test_a_jwt_of_the_issuer_signs_in_and_its_session_ends_with_the_token(make_config):
    import re
    import time

    import jwt

    secret = "s" * 40
    config = make_config(auth={"jwt": {"hs256_secret": secret, "issuer": "https://idp.test", "audience": "gateway"}})
    claims = {"sub": "ada", "project": "p1", "role": "viewer", "iss": "https://idp.test", "aud": "gateway",
              "exp": int(time.time()) + 60}  # fmt: skip
    with running(config) as (url, _), httpx.Client(base_url=url) as client:
        foreign = jwt.encode({**claims, "iss": "https://other.test"}, secret, algorithm="HS256")
        assert _form(client, foreign).status_code == 401
        answer = _form(client, jwt.encode(claims, secret, algorithm="HS256"))
        assert answer.status_code == 303
        max_age = int(re.search(r"Max-Age=(\d+)", answer.headers["set-cookie"])[1])
        assert 0 < max_age <= 60  # the token's exp, not the session's 8 hours (tests/unit/console: expiry itself)
        page = client.get("/ui/traces")
        assert page.status_code == 200
        assert "viewer" in page.text


def test_an_unknown_console_path_is_the_consoles_own_404(make_config):
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _), httpx.Client(base_url=url) as client:
        answer = client.get("/ui/nope")
        assert answer.status_code == 404
        assert "No console page at /ui/nope." in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert client.get("/ui/static/nope.js").status_code == 404
