"""The live tail: a WebSocket subscriber gets each record it is allowed to see and that matches its filters, as
the record is written; a non-admin sees its own project only; a bad key or filter is an error message."""

from __future__ import annotations

import contextlib

import orjson
from websockets.sync.client import connect

from tests.conftest import KEY, running
from tests.integration.helpers import sdk_client, user

ADMIN = "sk-admin-tail"
VIEWER = "sk-viewer-tail"
OTHER = "sk-other-tail"


def _ws(url: str, key: str, query: str = ""):
    return connect(
        url.replace("http://", "ws://") + "/api/v1/traces/tail" + query,
        additional_headers={"Authorization": f"Bearer {key}"},
        open_timeout=5,
    )


def _next_trace(socket) -> dict:
    while True:
        message = orjson.loads(socket.recv(timeout=5))
        if message["type"] == "trace":
            return message["data"]


def test_the_tail_streams_matching_records_of_the_callers_project(make_config):
    config = make_config(
        auth={"admin_key": ADMIN, "keys": [
            {"name": "tester", "key": KEY, "project": "p1"},
            {"name": "other", "key": OTHER, "project": "p2"},
            {"name": "viewer", "key": VIEWER, "project": "p1", "role": "viewer"},
        ]},
    )  # fmt: skip
    with (
        running(config) as (url, _),
        _ws(url, VIEWER, "?project=p2") as viewer,
        _ws(url, ADMIN, "?status_class=4xx") as errors,
    ):
        sdk_client(url, OTHER).chat.completions.create(model="demo", messages=user("p2 here"))
        sdk_client(url).chat.completions.create(
            model="demo", messages=user("p1 here"), extra_headers={"x-request-id": "tail-1"}
        )
        seen = _next_trace(viewer)
        assert seen["client_request_id"] == "tail-1"
        assert seen["project"] == "p1"
        with contextlib.suppress(Exception):
            sdk_client(url).chat.completions.create(
                model="no-such-model", messages=user("x"), extra_headers={"x-request-id": "tail-404"}
            )
        assert _next_trace(errors)["client_request_id"] == "tail-404"  # the successes did not match status_class=4xx


def test_a_developer_key_or_a_bad_filter_gets_an_error_message_and_a_close(make_config):
    with running(make_config(auth={"admin_key": ADMIN})) as (url, _):
        with _ws(url, KEY) as socket:
            message = orjson.loads(socket.recv(timeout=5))
            assert message["type"] == "error"
            assert message["error"]["code"] == "role_not_allowed"
        with _ws(url, ADMIN, "?min_latency_ms=fast") as socket:
            message = orjson.loads(socket.recv(timeout=5))
            assert message["error"]["param"] == "min_latency_ms"


def test_a_key_revoked_while_the_tail_is_open_stops_reading_at_the_next_ping(make_config, monkeypatch):
    import httpx

    import gateway.api.tail

    monkeypatch.setattr(gateway.api.tail, "_PING_S", 0.2)
    config = make_config(auth={"admin_key": ADMIN, "cache_ttl_s": 0.1, "negative_cache_ttl_s": 0.1})
    with running(config) as (url, _):
        admin = {"Authorization": f"Bearer {ADMIN}"}
        made = httpx.post(f"{url}/admin/keys", json={"project": "p1", "role": "viewer"}, headers=admin).json()
        with _ws(url, made["key"]) as socket:
            assert orjson.loads(socket.recv(timeout=5))["type"] == "ping"  # the key still works
            httpx.post(f"{url}/admin/keys/{made['id']}/revoke", headers=admin)
            messages = []
            while not messages or messages[-1]["type"] == "ping":
                messages.append(orjson.loads(socket.recv(timeout=5)))
            assert messages[-1]["type"] == "error"
            assert messages[-1]["error"]["code"] == "key_revoked"
