"""A hung PostgreSQL fails what waits on it, within a bound, instead of holding it: a virtual key's lookup on the
request path (auth.lookup_timeout_s), the query API and the admin API (telemetry.query_timeout_s). Records are
the outbox's business (tests/integration/test_crash_window.py); here, every other call. When the server answers
again, so does the gateway, with no restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.conftest import running
from tests.faults import FaultyProxy
from tests.services import drop_schema, require_postgres

ADMIN = {"authorization": "Bearer sk-admin-hung"}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
# Far above each configured bound, far below what a hold (asyncpg's 60 s command timeout) would take: a loaded
# machine may be slow, but not this slow.
BOUND_S = 15.0


@pytest.fixture
def hung_store(make_config: Callable[..., GatewayConfig]) -> Iterator[tuple[FaultyProxy, httpx.Client]]:
    dsn = require_postgres()
    schema = f"gw_hung_{uuid.uuid4().hex[:10]}"
    try:
        with FaultyProxy.before(dsn) as proxy:
            config = make_config(
                telemetry={"store": f"{proxy.url(dsn)}?schema={schema}", "query_timeout_s": 1.0},
                auth={"admin_key": "sk-admin-hung", "cache_ttl_s": 60, "lookup_timeout_s": 0.5},
            )
            with running(config) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
                yield proxy, client
    finally:
        drop_schema(dsn, schema)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def new_key(client: httpx.Client) -> str:
    made = client.post("/admin/keys", json={"name": f"k{uuid.uuid4().hex[:6]}"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def test_a_key_lookup_on_a_hung_store_fails_within_its_bound_and_a_cached_key_still_serves(
    hung_store: tuple[FaultyProxy, httpx.Client],
) -> None:
    proxy, client = hung_store
    known, unseen = new_key(client), new_key(client)
    assert client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {known}"}).is_success
    proxy.freeze()
    for key in (unseen, "sk-gw-never-issued-at-all-000000000000"):
        answer, took = timed(
            lambda key=key: client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        )
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "service_unavailable"
        assert took < BOUND_S, f"the request waited {took:.1f} s on a hung store"
    # A key read before the hang is in the cache: its requests never wait on the store.
    answer, took = timed(
        lambda: client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {known}"})
    )
    assert answer.status_code == 200
    proxy.thaw()
    deadline = time.monotonic() + 30
    while True:  # the key the hang refused is served once the store answers again
        answer = client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {unseen}"})
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/traces"),
        ("GET", "/api/v1/analytics/costs"),
        ("GET", "/api/v1/usage"),
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),  # a change waits on the store too
    ],
)
def test_the_query_and_admin_apis_answer_503_within_their_bound_on_a_hung_store(
    hung_store: tuple[FaultyProxy, httpx.Client], method: str, path: str
) -> None:
    proxy, client = hung_store

    def call() -> httpx.Response:
        fields = {"name": f"k{uuid.uuid4().hex[:6]}"} if method == "POST" else None
        return client.request(method, path, headers=ADMIN, json=fields)

    assert call().is_success
    proxy.freeze()
    answer, took = timed(call)
    assert answer.status_code == 503, answer.text
    assert took < BOUND_S, f"{path} waited {took:.1f} s on a hung store"
    proxy.thaw()
    deadline = time.monotonic() + 30
    while not (answer := call()).is_success and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.is_success, answer.text


def test_the_console_spend_page_on_a_hung_store_says_so_within_its_bound(
    hung_store: tuple[FaultyProxy, httpx.Client],
) -> None:
    proxy, client = hung_store
    pre = client.get("/ui/signin").cookies["gw_console_pre"]
    assert client.post("/ui/signin", data={"csrf": pre, "credential": "sk-admin-hung"}).status_code == 303
    proxy.freeze()
    try:
        page, took = timed(lambda: client.get("/ui/spend", params={"project": "p1"}))
    finally:
        proxy.thaw()
    assert took < BOUND_S
    assert page.status_code == 503
    assert "did not answer in time" in page.text
    assert 'name="group_by"' in page.text  # the page and its controls stay
