"""The webhook sink as a RudderStack or Segment source: write key and data plane URL in the config, checked by
`gateway check`, and the request they expect (<data plane>/v1/batch, HTTP Basic with the write key as user and an
empty password) against a local receiver that checks it."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.telemetry import SinkConfig
from gateway.sinks.exporters import SinkRejected, WebhookBatchSink, build_sink
from tests.servers import WRITE_KEY, data_plane
from tests.unit.sinks.test_sinks import record


def problems(sink: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(f"telemetry: {{sinks: {{rs: {sink}}}}}")
    return str(err.value)


@pytest.mark.anyio
async def test_batches_go_to_the_data_plane_with_the_write_key_as_basic_user() -> None:
    with data_plane() as (url, plane):
        config = SinkConfig(type="webhook", data_plane_url=url + "/", write_key=WRITE_KEY)
        sink = build_sink("rs", config)  # the real transport, aiohttp, over loopback
        try:
            await sink.write([record(), record(id="req-2", user_id="")])
        finally:
            await sink.close()
    assert [e["messageId"] for e in plane.events] == ["req-1", "req-2"]
    assert plane.events[0]["userId"] == "alice"
    assert plane.events[1]["anonymousId"] == "k1"


@pytest.mark.anyio
async def test_a_wrong_write_key_is_refused_for_good_and_never_said() -> None:
    with data_plane() as (url, plane):
        sink = build_sink("rs", SinkConfig(type="webhook", data_plane_url=url, write_key="not-the-key"))
        try:
            with pytest.raises(SinkRejected) as err:
                await sink.write([record()])
        finally:
            await sink.close()
    assert plane.refused == 1
    assert "401" in str(err.value)
    assert "not-the-key" not in str(err.value)


def test_the_write_key_stays_out_of_the_config_repr_and_a_signature_still_signs() -> None:
    config = SinkConfig(type="webhook", data_plane_url="https://dp.test", write_key=WRITE_KEY, secret="whsec")
    assert WRITE_KEY not in repr(config)
    assert "whsec" not in repr(config)
    sink = WebhookBatchSink("rs", config)
    assert sink.url == "https://dp.test/v1/batch"


def test_config_needs_both_or_neither() -> None:
    assert "telemetry.sinks.rs: write_key needs data_plane_url" in problems(
        f"{{type: webhook, url: 'https://hooks.test/b', write_key: {WRITE_KEY}}}"
    )
    assert "telemetry.sinks.rs: data_plane_url needs write_key" in problems(
        "{type: webhook, data_plane_url: 'https://dp.test'}"
    )
    both = problems("{type: webhook, url: 'https://x.test', data_plane_url: 'https://dp.test', write_key: k}")
    assert "url or data_plane_url, not both" in both
    assert "must be an http:// or https:// URL" in problems("{type: webhook, data_plane_url: 'dp.test', write_key: k}")
    assert "telemetry.sinks.rs.write_key: only a webhook sink takes it" in problems(
        "{type: otlp, url: 'http://collector:4318', write_key: k}"
    )
    assert "the write key makes the authorization header" in problems(
        "{type: webhook, data_plane_url: 'https://dp.test', write_key: k, headers: {Authorization: 'Basic x'}}"
    )
    assert "telemetry.sinks.rs.url: must be an http:// or https:// URL" in problems("{type: webhook}")
    # The write key comes from the environment, as every secret; a problem never shows it.
    config = parse_config(
        "telemetry: {sinks: {rs: {type: webhook, data_plane_url: 'https://dp.test', write_key: '${RS_KEY}'}}}",
        env={"RS_KEY": WRITE_KEY},
    )
    assert config.telemetry.sinks["rs"].write_key == WRITE_KEY
    assert WRITE_KEY not in problems(f"{{type: webhook, write_key: {WRITE_KEY}}}")


@pytest.mark.parametrize(
    ("data_plane_url", "problem"),
    [
        ("https://dp.test/v1/batch", "leave /v1/batch out"),
        ("https://dp.test/v1/batch/", "leave /v1/batch out"),
        ("https://dp.test/?writeKey=x", "without ?query"),
        ("https://dp.test/#x", "without ?query or #fragment"),
    ],
)
def test_a_data_plane_url_that_would_post_elsewhere_is_a_problem(data_plane_url: str, problem: str) -> None:
    # Batches go to <data_plane_url>/v1/batch: these would go to a 404 or to a path past a query string, and every
    # record to the dead letters.
    text = problems(f"{{type: webhook, data_plane_url: '{data_plane_url}', write_key: k}}")
    assert "telemetry.sinks.rs.data_plane_url:" in text
    assert problem in text
    assert parse_config("telemetry: {sinks: {rs: {type: webhook, data_plane_url: 'https://dp.test/x/', write_key: k}}}")
