"""The console's main flows in Chromium: sign-in and out, the trace viewer, keys, health, roles and projects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from playwright.sync_api import expect

from tests.console.conftest import ADMIN, chat, sign_in, wait_for_records


def test_sign_in_and_out(page: Any, console: str, shot: Any) -> None:
    page.goto(f"{console}/ui/traces")
    assert "/ui/signin" in page.url
    shot(page, "signin")
    page.get_by_label("Key or token").fill("sk-wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect API key provided."
    page.get_by_label("Key or token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ui/traces"))  # back where the browser first asked to go
    cookie = next(c for c in page.context.cookies() if c["name"] == "gw_console")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert ADMIN not in cookie["value"]
    assert page.locator(".who .badge").inner_text() == "admin"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert "Signed out." in page.get_by_role("alert").inner_text()
    page.goto(f"{console}/ui/traces")
    assert "/ui/signin" in page.url


def test_filter_traces_open_one_and_export(page: Any, console: str, shot: Any) -> None:
    for i in range(3):
        assert chat(console, "sk-app-a", "demo", f"first question {i}").status_code == 200
    assert chat(console, "sk-app-a", "other", "first question: my mail is ann@example.com").status_code == 200
    wait_for_records(console, 4)
    sign_in(page, console, ADMIN)
    assert page.locator("#trace-rows tr").count() == 4
    shot(page, "traces")
    page.get_by_label("Model", exact=True).fill("other")
    page.get_by_label("Time range").select_option("-900")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"model=other"))  # the filters are in the URL: the view can be shared
    rows = page.locator("#trace-rows tr")
    assert rows.count() == 1
    assert "other" in rows.first.inner_text()
    assert "since=-900" in page.url
    shot(page, "traces-filtered")
    # Export of the current filter, through the session.
    href = page.get_by_role("link", name="NDJSON").get_attribute("href")
    assert "model=other" in href
    exported = page.request.get(f"{console}{href}")
    assert exported.status == 200
    lines = [orjson.loads(line) for line in exported.text().splitlines()]
    assert [r["model_requested"] for r in lines] == ["other"]
    # A reload (no htmx) shows the same view.
    page.reload()
    assert page.locator("#trace-rows tr").count() == 1
    page.locator("#trace-rows a").first.click()
    page.wait_for_url(re.compile(r"/ui/traces/[^/?]+$"))
    assert page.get_by_role("heading", name="Spans").is_visible()
    assert page.locator("table.waterfall tbody tr").count() >= 2
    assert "[EMAIL]" in page.locator("pre.content").first.inner_text()  # content as logged: redacted
    for _ in range(50):  # the similarity worker embeds prompts off the request path: a moment after the records
        if page.locator("table.similar").count():
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(page.locator("table.similar")).to_contain_text("first question")  # the nearest prompts of project A
    page.get_by_text("Raw record (JSON)").click()
    assert '"model_requested": "other"' in page.locator("pre.raw").inner_text()
    shot(page, "trace")


def test_paging_by_cursor(page: Any, console: str) -> None:
    for i in range(5):
        chat(console, "sk-app-a", "demo", f"q{i}")
    wait_for_records(console, 5)
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/traces?limit=2")
    seen = []
    for _ in range(3):
        seen += page.locator("#trace-rows a").all_inner_texts()
        nxt = page.get_by_role("link", name="Next page")
        if not nxt.count():
            break
        nxt.click()
        page.wait_for_url(re.compile(r"cursor="))
    assert len(seen) == 5
    assert len(set(seen)) == 5


def test_viewer_sees_no_write_controls_and_a_forged_post_is_refused(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, "sk-viewer-a")
    assert page.locator(".who .badge").inner_text() == "viewer"
    page.goto(f"{console}/ui/keys")
    assert page.get_by_text("Create a key").count() == 0
    assert page.get_by_role("button", name=re.compile("Revoke")).count() == 0
    shot(page, "keys-viewer")
    page.goto(f"{console}/ui/health")
    assert page.get_by_role("button", name=re.compile("Drain|Undrain|Reset|Set")).count() == 0
    expect(page.locator("table.flags")).to_contain_text("content_logging")  # read, not changed
    shot(page, "health-viewer")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")  # the viewer's own, valid token
    forged = page.request.post(f"{console}/ui/keys", form={"csrf": csrf, "name": "sneaky", "role": "admin"})
    assert forged.status == 403
    forged = page.request.post(
        f"{console}/ui/health", form={"csrf": csrf, "deployment": "mock/demo-1", "action": "drain"}
    )
    assert forged.status == 403
    forged = page.request.post(
        f"{console}/ui/health/flags", form={"csrf": csrf, "flag": "content_logging", "value": "full", "project": "A"}
    )
    assert forged.status == 403
    admin_view = httpx.get(f"{console}/admin/deployments", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert not any(d["drained"] for d in admin_view["data"])
    keys = httpx.get(f"{console}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert not [k for k in keys if k["name"] == "sneaky"]


def test_a_post_without_the_session_csrf_token_is_refused(page: Any, console: str) -> None:
    sign_in(page, console, ADMIN)
    for form in ({}, {"csrf": "forged"}):
        answer = page.request.post(
            f"{console}/ui/health", form={**form, "deployment": "mock/demo-1", "action": "drain"}
        )
        assert answer.status == 403
    answer = page.request.post(
        f"{console}/ui/health",
        form={"csrf": page.locator("input[name=csrf]").first.get_attribute("value"), "deployment": "mock/demo-1",
              "action": "drain"},
        headers={"origin": "http://evil.example"},
    )  # fmt: skip
    assert answer.status == 403


def test_project_b_records_never_appear_for_project_a(page: Any, console: str) -> None:
    chat(console, "sk-app-a", "demo", "from A")
    chat(console, "sk-app-b", "demo", "from B secret")
    rows = wait_for_records(console, 2)
    b_id = next(r["id"] for r in rows if r["project"] == "B")
    sign_in(page, console, "sk-viewer-a")
    page.goto(f"{console}/ui/traces?project=B")  # asking for B gets A's: a viewer is held to its project
    texts = page.locator("#trace-rows tr").all_inner_texts()
    assert len(texts) == 1
    assert page.get_by_label("Project").count() == 0  # no project filter for a non-admin
    page.goto(f"{console}/ui/traces?text=secret")
    assert page.locator("#trace-rows a").count() == 0
    assert page.goto(f"{console}/ui/traces/{b_id}").status == 404
    assert "secret" not in page.content()
    exported = page.request.get(f"{console}/ui/traces/export?format=json&project=B")
    assert [r["project"] for r in orjson.loads(exported.body())] == ["A"]
    assert page.request.get(f"{console}/ui/traces/{b_id}/export?format=json").status == 404


def test_create_use_and_revoke_a_key(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.get_by_role("link", name="Keys").click()
    page.wait_for_url(re.compile(r"/ui/keys"))
    page.get_by_text("Create a key").click()
    page.get_by_label("Name").fill("batch-job")
    page.get_by_label("Project", exact=True).fill("A")
    page.get_by_label("Requests / min").fill("100")
    shot(page, "keys-create")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r"/ui/keys/created$"))
    key = page.get_by_label(re.compile("Key for batch-job")).input_value()
    assert key.startswith("sk-")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")  # the clipboard answers later
    shot(page, "key-created")
    assert chat(console, key).status_code == 200
    page.get_by_role("link", name="Back to keys").click()
    page.get_by_role("button", name="Rotate key batch-job").click()
    expect(page.get_by_role("heading", name="Key rotated")).to_be_visible()
    rotated = page.get_by_label(re.compile("Key for batch-job")).input_value()
    assert rotated != key
    assert chat(console, key).status_code == 401
    assert chat(console, rotated).status_code == 200
    page.get_by_role("link", name="Back to keys").click()
    page.get_by_role("button", name="Revoke key batch-job").click()
    page.wait_for_url(re.compile(r"revoked="))
    assert "is revoked" in page.get_by_role("status").inner_text()
    shot(page, "keys")
    assert chat(console, rotated).status_code == 401


def test_reloading_the_new_keys_page_makes_no_other_key(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/keys")
    page.get_by_text("Create a key").click()
    page.get_by_label("Name").fill("once")
    page.get_by_label("Project", exact=True).fill("A")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r"/ui/keys/created$"))  # POST-redirect-GET: the page is a GET
    key = page.get_by_label(re.compile("Key for once")).input_value()
    assert key.startswith("sk-gw-")
    page.reload()
    expect(page.get_by_role("heading", name="Key already shown")).to_be_visible()
    assert key not in page.content()
    shot(page, "key-already-shown")
    page.go_back()  # back to the form's page, as the history has it: still no second key
    listed = httpx.get(f"{console}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert [k["name"] for k in listed].count("once") == 1
    assert chat(console, key).status_code == 200


def test_edit_a_keys_models_limits_and_budget(page: Any, console: str, shot: Any) -> None:
    auth = {"authorization": f"Bearer {ADMIN}"}
    made = httpx.post(f"{console}/admin/keys", json={"name": "editable", "project": "A", "allowed_models": ["demo"]},
                      headers=auth).json()  # fmt: skip
    assert chat(console, made["key"], "other").status_code == 403
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/keys")
    page.get_by_role("link", name="Edit key editable").click()
    expect(page.get_by_label("Allowed models (comma-separated, blank: all)")).to_have_value("demo")
    page.get_by_label("Allowed models (comma-separated, blank: all)").fill("demo, other")
    page.get_by_label("Requests / min (blank: no limit)").fill("many")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_contain_text("rpm must be a number")  # the form stays, with what was typed
    expect(page.get_by_label("Allowed models (comma-separated, blank: all)")).to_have_value("demo, other")
    page.get_by_label("Requests / min (blank: no limit)").fill("90")
    page.get_by_label("Budget in $ (blank: none)").fill("12.5")
    page.get_by_label("Budget period").select_option("day")
    shot(page, "key-edit")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(re.compile(r"updated="))
    expect(page.get_by_role("status")).to_contain_text("is changed")
    row = page.locator("table.keys tbody tr", has_text="editable")
    expect(row).to_contain_text("demo, other")
    expect(row).to_contain_text("90 rpm")
    expect(row).to_contain_text("$12.5/day")
    shot(page, "keys-edited")
    (key,) = [k for k in httpx.get(f"{console}/admin/keys", headers=auth).json()["data"] if k["name"] == "editable"]
    assert (key["allowed_models"], key["rpm"], key["budget_usd"], key["budget_period"]) == (
        ["demo", "other"], 90, 12.5, "day")  # fmt: skip
    assert chat(console, made["key"], "other").status_code == 200  # the same key, its new models


def test_drain_and_undrain_a_deployment(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/health")
    expect(page.locator("table.sinks")).to_contain_text("store")
    shot(page, "health")
    page.get_by_role("button", name="Drain mock/demo-1").click()
    page.wait_for_url(re.compile(r"done=drain"))
    row = page.locator("tbody tr", has_text="mock/demo-1")
    assert "drained" in row.inner_text()
    api = httpx.get(f"{console}/admin/deployments", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert next(d for d in api if d["id"] == "mock/demo-1")["drained"] is True
    shot(page, "health-drained")
    page.get_by_role("button", name="Undrain mock/demo-1").click()
    page.wait_for_url(re.compile(r"done=undrain"))
    api = httpx.get(f"{console}/admin/deployments", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    assert next(d for d in api if d["id"] == "mock/demo-1")["drained"] is False


def test_a_developer_key_sees_no_console_page(page: Any, console: str) -> None:
    sign_in(page, console, "sk-app-a")
    assert page.get_by_role("heading", name="Nothing to show for this role").is_visible()
    assert page.goto(f"{console}/ui/traces").status == 403


def test_live_mode_shows_a_request_sent_during_the_test(page: Any, console: str, shot: Any) -> None:
    chat(console, "sk-app-a", "demo", "before")
    wait_for_records(console, 1)
    sign_in(page, console, "sk-viewer-a")
    page.goto(f"{console}/ui/traces?model=other")
    assert page.locator("#trace-rows a").count() == 0
    page.get_by_label("Live: add new records as they arrive").check()
    page.wait_for_selector("#live-state[data-state=open]")
    chat(console, "sk-app-b", "other", "project B, not shown")
    chat(console, "sk-app-a", "demo", "another model, not shown")
    assert chat(console, "sk-app-a", "other", "live one").status_code == 200
    fresh = page.locator("#trace-rows tr.fresh")
    fresh.first.wait_for()
    page.wait_for_timeout(300)  # the two that do not match had their chance to arrive first
    assert fresh.count() == 1
    assert "other" in fresh.first.inner_text()
    shot(page, "traces-live")
    fresh.first.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/ui/traces/[^/?]+$"))
    assert "live one" in page.locator("pre.content").first.inner_text()


def test_the_live_tail_refuses_another_origin(console: str) -> None:
    from websockets.sync.client import connect

    ws_url = console.replace("http://", "ws://") + "/ui/traces/tail"
    with connect(ws_url, origin="http://evil.example") as socket:
        message = orjson.loads(socket.recv())
    assert message["type"] == "error"
    assert message["error"]["code"] == "csrf_failed"


BROKEN = """\
- name: tag-demo
  description: Tags requests for the demo model.
  mode: sometimes
  match:
    model: demo
  actions:
    tag: {reviewed: "yes"}
"""


def test_create_a_policy_with_an_error_fix_it_evaluate_and_roll_back(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="New policy (YAML)").click()
    editor = page.get_by_label("Policy (YAML)")
    editor.fill(BROKEN)
    # Checked as you type, by the policy loader: the problem names its line.
    expect(page.locator("#problems")).to_contain_text("Line 3")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("ol.listing li#line-3.bad")).to_contain_text("mode: sometimes")
    shot(page, "policy-error")
    page.get_by_label("Policy (YAML)").fill(BROKEN.replace("sometimes", "enforce"))
    expect(page.locator("#problems")).to_contain_text("The policy loads.")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(re.compile(r"/ui/policies/tag-demo\?saved=1"))
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Policy (YAML)").fill(BROKEN.replace("sometimes", "shadow"))
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(re.compile(r"saved=2"))
    # Try a request: the shadow version matches and says so.
    page.get_by_role("link", name="Try a request").click()
    page.get_by_role("button", name="Evaluate").click()
    row = page.locator("table.steps tbody tr", has_text="tag-demo")
    expect(row).to_contain_text("shadow")
    expect(row.locator("td").nth(2)).to_have_text("yes")
    shot(page, "policy-try")
    page.goto(f"{console}/ui/policies/tag-demo")
    page.get_by_text("Diff with version 1").click()
    expect(page.locator("pre.diff .d-add")).to_contain_text("mode: shadow")
    page.get_by_role("button", name="Roll back to version 1").click()
    page.wait_for_url(re.compile(r"rolled=1"))
    expect(page.locator(".badge.mode-enforce").first).to_be_visible()
    assert page.locator("table.versions tbody tr").count() == 3
    shot(page, "policy")
    api = httpx.get(f"{console}/api/v1/policies/tag-demo", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert api["mode"] == "enforce"
    assert api["version"] == 3
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete the policy tag-demo?"
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"deleted=tag-demo"))
    gone = httpx.get(f"{console}/api/v1/policies/tag-demo", headers={"authorization": f"Bearer {ADMIN}"})
    assert gone.status_code == 404


def test_a_viewer_reads_policies_but_edits_none(page: Any, console: str) -> None:
    httpx.post(
        f"{console}/api/v1/policies",
        json={"policy": yaml.safe_load(BROKEN.replace("sometimes", "enforce"))[0]},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).raise_for_status()
    sign_in(page, console, "sk-viewer-a")
    page.goto(f"{console}/ui/policies")
    assert page.get_by_role("link", name=re.compile("New policy")).count() == 0
    page.get_by_role("link", name="tag-demo").click()
    assert page.get_by_role("link", name="Edit").count() == 0
    assert page.get_by_role("button", name=re.compile("Roll back|Delete")).count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert page.request.post(f"{console}/ui/policies", form={"csrf": csrf, "yaml": BROKEN}).status == 403
    assert (
        page.request.post(f"{console}/ui/policies/tag-demo/rollback", form={"csrf": csrf, "version": "1"}).status == 403
    )
    assert page.goto(f"{console}/ui/policies/new").status == 403


def test_spend_charts_group_by_model_and_stay_in_the_project(page: Any, console: str, shot: Any) -> None:
    for model, key in (("demo", "sk-app-a"), ("demo", "sk-app-a"), ("other", "sk-app-a"), ("other", "sk-app-b")):
        chat(console, key, model, "count me")
    wait_for_records(console, 4)
    sign_in(page, console, "sk-viewer-a")
    page.get_by_role("link", name="Spend").click()
    page.get_by_label("Group by").select_option("model")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"group_by=model"))
    requests = page.locator("section.chart", has=page.get_by_role("heading", name="Requests", exact=True))
    legend = requests.locator(".legend").inner_text()
    assert "demo: 2" in legend
    assert "other: 1" in legend  # project B's request is not counted for a viewer of A
    assert requests.locator("polyline").count() == 2
    assert page.get_by_label("Project").count() == 0
    shot(page, "spend")


def test_the_main_flows_work_with_the_keyboard(page: Any, console: str) -> None:
    page.goto(f"{console}/ui/")
    # The key field takes the focus (autofocus) once the page is laid out, which may be after goto() returns:
    # typed before that, the key went nowhere and the sign-in came back empty.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'credential'")
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/traces"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # Through the navigation to Health, and a drain by keyboard alone.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Health":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/health"))
    page.get_by_role("button", name="Drain mock/demo-1").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"done=drain"))
    outline = page.evaluate(
        "(() => { const b = document.querySelector('button[value=undrain]'); b.focus();"
        " return getComputedStyle(b).outlineStyle; })()"
    )
    assert outline == "solid"  # focus is visible


def test_set_and_reset_a_feature_flag_for_a_project(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/health")
    page.get_by_label("Project (blank: the global values)").fill("A")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"project=A"))
    page.get_by_label("Value of content_logging").select_option("full")
    page.get_by_role("button", name="Set content_logging").click()
    page.wait_for_url(re.compile(r"done=set"))
    row = page.locator("table.flags tbody tr", has_text="content_logging")
    expect(row).to_contain_text("api:project")
    shot(page, "health-flags")
    auth = {"authorization": f"Bearer {ADMIN}"}
    flags = httpx.get(f"{console}/api/v1/features", params={"project": "A"}, headers=auth).json()["flags"]
    assert flags["content_logging"] == {"value": "full", "source": "api:project"}
    page.get_by_role("button", name="Reset content_logging to the config's value").click()
    page.wait_for_url(re.compile(r"done=reset"))
    flags = httpx.get(f"{console}/api/v1/features", params={"project": "A"}, headers=auth).json()["flags"]
    assert flags["content_logging"]["source"] != "api:project"


def test_the_policy_form_writes_yaml_the_editor_saves(page: Any, console: str, shot: Any) -> None:
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/policies")
    page.get_by_role("link", name="New policy (form)").click()
    page.get_by_label("Name", exact=True).fill("eu-only")
    page.get_by_label("Project", exact=True).fill("A")
    page.get_by_label("What to do").select_option("route")
    page.get_by_label("Route: regions").fill("eu")
    shot(page, "policy-form")
    page.get_by_role("button", name="Write the YAML").click()
    editor = page.get_by_label("Policy (YAML)")
    text = yaml.safe_load(editor.input_value())
    assert text == [
        {"name": "eu-only", "mode": "enforce", "match": {"project": "A"}, "actions": {"route": {"regions": ["eu"]}}}
    ]
    expect(page.locator("#problems")).to_contain_text("The policy loads.")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(re.compile(r"/ui/policies/eu-only\?saved=1"))


def test_every_page_has_sufficient_contrast(page: Any, console: str) -> None:
    check = (Path(__file__).parent / "contrast.js").read_text()
    chat(console, "sk-app-a", "demo", "x")
    trace_id = wait_for_records(console, 1)[0]["id"]
    page.goto(f"{console}/ui/signin")
    assert page.evaluate(check) == []
    sign_in(page, console, ADMIN)
    for path in ("/ui/traces", f"/ui/traces/{trace_id}", "/ui/policies", "/ui/policies/form", "/ui/policies/try",
                 "/ui/spend?group_by=model", "/ui/keys", "/ui/health"):  # fmt: skip
        page.goto(f"{console}{path}")
        assert page.evaluate(check) == [], path


def test_every_control_on_every_page_has_a_name(page: Any, console: str, shot: Any) -> None:
    """Accessibility: what a screen reader says for each control is never empty, on every page an admin can reach,
    the key pages and the policy editor included; the new pages' contrast too."""
    labels = (Path(__file__).parent / "labels.js").read_text()
    contrast = (Path(__file__).parent / "contrast.js").read_text()
    auth = {"authorization": f"Bearer {ADMIN}"}
    made = httpx.post(f"{console}/admin/keys", json={"name": "named", "project": "A"}, headers=auth).json()
    policy = {"policy": {"name": "tagger", "actions": {"tag": {"a": "b"}}}}
    assert httpx.post(f"{console}/api/v1/policies", json=policy, headers=auth).status_code in (200, 201)
    chat(console, "sk-app-a", "demo", "x")
    trace_id = wait_for_records(console, 1)[0]["id"]
    page.goto(f"{console}/ui/signin")
    assert page.evaluate(labels) == []
    sign_in(page, console, ADMIN)
    paths = ["/ui/traces", f"/ui/traces/{trace_id}", "/ui/policies", "/ui/policies/new", "/ui/policies/form",
             "/ui/policies/try", "/ui/policies/tagger", "/ui/policies/tagger/edit", "/ui/spend?group_by=model",
             "/ui/spend?project=A", "/ui/keys", f"/ui/keys/{made['id']}/edit", "/ui/keys/created", "/ui/health",
             "/ui/nowhere"]  # fmt: skip
    for path in paths:
        page.goto(f"{console}{path}")
        page.locator("details").evaluate_all("ds => ds.forEach(d => d.open = true)")  # the folded forms too
        assert page.evaluate(labels) == [], path
        assert page.evaluate(contrast) == [], path
    page.goto(f"{console}/ui/keys")
    page.get_by_text("Create a key").click()
    page.get_by_label("Name", exact=True).fill("named-2")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r"/ui/keys/created$"))
    assert page.evaluate(labels) == []
    assert page.evaluate(contrast) == []
    shot(page, "key-created")
    page.evaluate("document.querySelector('main').append(document.createElement('input'))")
    assert len(page.evaluate(labels)) == 1  # the check finds a control without a name


def _tab_to(page: Any, test: str, limit: int = 60) -> None:
    """Tab until the focused element passes `test` (a JS expression of `e`)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(e => !!e && ({test}))(document.activeElement)"):
            return
    raise AssertionError(f"no focusable element where {test}")


def test_create_and_edit_a_key_with_the_keyboard(page: Any, console: str) -> None:
    sign_in(page, console, ADMIN)
    page.goto(f"{console}/ui/keys")
    _tab_to(page, "e.tagName === 'SUMMARY'")
    page.keyboard.press("Enter")  # unfolds "Create a key"
    _tab_to(page, "e.id === 'k-name'")
    page.keyboard.type("typed")
    page.keyboard.press("Enter")  # submits the form
    page.wait_for_url(re.compile(r"/ui/keys/created$"))
    _tab_to(page, "e.dataset.copy === 'new-key'")
    _tab_to(page, "e.textContent === 'Back to keys'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/keys$"))
    _tab_to(page, "e.getAttribute('aria-label') === 'Edit key typed'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/edit$"))
    _tab_to(page, "e.id === 'e-tpm'")
    page.keyboard.type("5000")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"updated="))
    expect(page.locator("table.keys tbody tr", has_text="typed")).to_contain_text("5000 tpm")
