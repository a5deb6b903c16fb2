"""transport_error: the upstream client's failures as the gateway's errors, with the statuses, codes and messages
clients saw when aiohttp was the client (the class named in a message keeps aiohttp's name)."""

from __future__ import annotations

import pytest

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.providers.base import TRANSPORT_ERRORS, transport_error
from gateway.providers.http import (
    ClientOSError,
    ClientPayloadError,
    ClientResponseError,
    ConnectError,
    ConnectTimeout,
    ReadTimeout,
    ServerDisconnectedError,
)

TIMED_OUT = "The upstream provider 'p' timed out."


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (ConnectTimeout("x"), UpstreamTimeout, TIMED_OUT),
        (ReadTimeout("x"), UpstreamTimeout, TIMED_OUT),
        (TimeoutError(), UpstreamTimeout, TIMED_OUT),
        (ConnectError("x"), UpstreamUnavailable, "Cannot connect to the upstream provider 'p'."),
        (ServerDisconnectedError("x"), UpstreamUnavailable, "failed: ServerDisconnectedError."),
        (ClientOSError(104, "reset"), UpstreamUnavailable, "failed: ClientOSError."),
        (ClientPayloadError("x"), UpstreamUnavailable, "failed: ClientPayloadError."),
        (ClientResponseError("x"), UpstreamUnavailable, "failed: ClientResponseError."),
        (ConnectionResetError(), UpstreamUnavailable, "failed: ConnectionResetError."),
    ],
)
def test_each_failure_maps_as_before(error: BaseException, kind: type, message: str) -> None:
    assert isinstance(error, TRANSPORT_ERRORS)
    mapped = transport_error("p", error)
    assert type(mapped) is kind
    assert mapped.message.endswith(message)
    if kind is UpstreamUnavailable and "Cannot" not in message:
        assert mapped.message == f"The connection to the upstream provider 'p' {message}"
