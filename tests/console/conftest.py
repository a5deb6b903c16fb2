"""The console in a real browser: Playwright for Python driving Debian's Chromium (/usr/bin/chromium, or
GATEWAY_TEST_CHROMIUM), against a gateway on loopback. Without Chromium the tests skip with a reason, unless
GATEWAY_TEST_SERVICES=required (CI installs it), which makes that a failure.

Each test saves a screenshot of each page it visits under its tmp_path; with GATEWAY_CONSOLE_SHOTS set to a folder,
the latest ones are copied there too, to be looked at."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.conftest import running

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN = "sk-admin-console"
KEYS = [
    {"name": "app-a", "key": "sk-app-a", "project": "A", "role": "developer"},
    {"name": "app-b", "key": "sk-app-b", "project": "B", "role": "developer"},
    {"name": "viewer-a", "key": "sk-viewer-a", "project": "A", "role": "viewer"},
]


def _require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("GATEWAY_TEST_SERVICES") == "required":
        pytest.fail(f"{message} and GATEWAY_TEST_SERVICES=required")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: Playwright's sync API holds an event loop in this thread while it runs, and
    the asyncio tests that come after need it gone."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def console(make_config: Callable[..., GatewayConfig]) -> Iterator[str]:
    """A gateway with keys of projects A and B, a viewer of A, an admin key; two model groups."""
    config = make_config(
        auth={"admin_key": ADMIN, "keys": KEYS, "cache_ttl_s": 0.2, "negative_cache_ttl_s": 0.1},
        models={"other": {"deployments": [{"provider": "mock", "model": "other-1"}]}},
        telemetry={"content": {"mode": "redacted"}},
        similarity={"enabled": True},
    )
    with running(config) as (url, _):
        yield url


def chat(url: str, key: str, model: str = "demo", text: str = "hello") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        timeout=10,
    )


def wait_for_records(url: str, count: int, **filters: str) -> list[dict[str, Any]]:
    """The records the API lists (as admin) once at least `count` are written."""
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.get(
            f"{url}/api/v1/traces", params={"limit": "1000", **filters}, headers={"authorization": f"Bearer {ADMIN}"}
        )
        rows: list[dict[str, Any]] = answer.json()["data"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/ui/")
    page.get_by_label("Key or token").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """shot(page, name): a full-page screenshot under tmp_path (and GATEWAY_CONSOLE_SHOTS, when set)."""
    shared = os.environ.get("GATEWAY_CONSOLE_SHOTS")

    def take(page: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if shared:
            Path(shared).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(shared) / path.name)
        return path

    return take
