"""The ids of an answer: the client's X-Request-ID is kept only when sane, and the headers sent back can carry
nothing but the id characters, whatever bytes the client put in its header."""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from gateway.api.http import client_request_id, id_headers
from gateway.ids import new_id

SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


@settings(max_examples=500, database=None)
@given(
    value=st.binary(max_size=300) | st.from_regex(rb"[A-Za-z0-9._:\-]{1,140}", fullmatch=True),
    others=st.lists(st.tuples(st.sampled_from([b"x-request-id", b"x-other"]), st.binary(max_size=20)), max_size=3),
)
def test_only_a_sane_first_request_id_is_kept_and_nothing_else_is_ever_sent_back(
    value: bytes, others: list[tuple[bytes, bytes]]
) -> None:
    scope = {"headers": [(b"x-other", b"1"), (b"x-request-id", value), *others]}
    kept = client_request_id(scope)
    assert kept == (value.decode() if SANE.fullmatch(value) else "")  # the first one only, a later one never
    gateway_id = new_id()
    headers = dict(id_headers(gateway_id, kept))
    assert headers[b"x-gateway-request-id"] == gateway_id.encode()
    assert headers[b"x-request-id"] == (value if kept else gateway_id.encode())
    assert all(SANE.fullmatch(v) for v in headers.values())


def test_without_an_x_request_id_the_client_has_none() -> None:
    assert client_request_id({"headers": [(b"x-request-ids", b"abc"), (b"request-id", b"abc")]}) == ""
