"""auth without a gateway: a fake identity behind the filter's Identity protocol."""

from __future__ import annotations

import pytest

from gateway.context import ANONYMOUS, Principal
from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.filters.auth import AuthFilter
from gateway.filters.base import LATER
from tests.unit.filters.helpers import chat, make_ctx

BEARER = [(b"authorization", b"Bearer sk-good")]


class Keys:
    """Knows one key; records what it was asked."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.asked: list[str | None] = []

    async def identify(self, token: str | None) -> Principal:
        self.asked.append(token)
        if token != "sk-good":
            raise AuthenticationFailed("bad key")
        return self.principal


@pytest.mark.anyio
async def test_mode_none_lets_everyone_in_as_anonymous_without_asking_for_a_key():
    keys = Keys(Principal(name="app"))
    auth = AuthFilter(keys, "none")
    ctx = make_ctx(headers=BEARER)
    await auth.identify(ctx)
    assert await auth.on_request(ctx) is None
    assert ctx.principal is ANONYMOUS
    assert keys.asked == []


@pytest.mark.anyio
async def test_the_key_is_read_from_the_headers_at_the_door():
    app = Principal(name="app", project="p1")
    auth = AuthFilter(Keys(app), "keys")
    ctx = make_ctx(headers=BEARER)
    await auth.identify(ctx)
    assert ctx.principal is app
    assert await auth.on_request(ctx) is None


@pytest.mark.anyio
async def test_a_bad_or_missing_key_is_refused():
    auth = AuthFilter(Keys(Principal(name="app")), "keys")
    with pytest.raises(AuthenticationFailed):
        await auth.identify(make_ctx(headers=[(b"authorization", b"Bearer sk-bad")]))
    with pytest.raises(AuthenticationFailed):
        await auth.on_request(make_ctx())  # not identified at the door: on_request asks itself


@pytest.mark.anyio
async def test_azure_s_api_key_header_is_a_key_too():
    keys = Keys(Principal(name="app"))
    ctx = make_ctx(headers=[(b"api-key", b"sk-good")])
    await AuthFilter(keys, "keys").identify(ctx)
    assert keys.asked == ["sk-good"]


@pytest.mark.anyio
async def test_a_role_the_matrix_does_not_allow_is_denied():
    viewer = Principal(name="auditor", role="viewer")
    auth = AuthFilter(Keys(viewer), "keys")
    with pytest.raises(PermissionDenied):  # at the door, before the body is read
        await auth.identify(make_ctx(headers=BEARER))
    with pytest.raises(PermissionDenied):  # and for a caller that was not identified at the door
        await auth.on_request(make_ctx(headers=BEARER))


@pytest.mark.anyio
async def test_a_key_limited_to_some_models_may_not_use_another():
    limited = Principal(name="app", allowed_models=frozenset({"demo"}))
    auth = AuthFilter(Keys(limited), "keys")
    allowed = make_ctx(chat("hi", model="demo"), headers=BEARER)
    await auth.identify(allowed)
    assert await auth.on_request(allowed) is None
    other = make_ctx(chat("hi", model="gpt-4o"), headers=BEARER)
    await auth.identify(other)
    with pytest.raises(PermissionDenied) as info:
        await auth.on_request(other)
    assert info.value.code == "model_not_allowed"
    assert info.value.param == "model"
    # The models list names no model: the key may list what there is.
    listing = make_ctx({}, endpoint="models", headers=BEARER)
    await auth.identify(listing)
    assert await auth.on_request(listing) is None


@pytest.mark.anyio
async def test_a_known_token_is_identified_without_a_coroutine_and_any_other_is_left_to_identify():
    app = Principal(name="app", project="p1")
    keys = Keys(app)
    auth = AuthFilter(keys, "keys", known={"sk-good": app})
    ctx = make_ctx(headers=BEARER)
    assert auth.identify_now(ctx) is True
    assert ctx.principal is app
    assert keys.asked == []  # the lookup that awaits was not asked
    assert auth.decide(ctx) is None  # and the request phase needs no coroutine either
    unknown = make_ctx(headers=[(b"authorization", b"Bearer sk-other")])
    assert auth.identify_now(unknown) is False
    assert unknown.principal is ANONYMOUS  # changed nothing: identify does the whole of it
    assert auth.identify_now(make_ctx()) is False  # no key at all: identify refuses it
    assert AuthFilter(keys, "none").identify_now(make_ctx()) is True  # nothing to identify


@pytest.mark.anyio
async def test_a_known_token_is_still_held_to_the_role_matrix_and_its_models():
    viewer = Principal(name="auditor", role="viewer")
    with pytest.raises(PermissionDenied):
        AuthFilter(Keys(viewer), "keys", known={"sk-good": viewer}).identify_now(make_ctx(headers=BEARER))
    limited = Principal(name="app", allowed_models=frozenset({"demo"}))
    auth = AuthFilter(Keys(limited), "keys", known={"sk-good": limited})
    other = make_ctx(chat("hi", model="gpt-4o"), headers=BEARER)
    assert auth.identify_now(other)
    with pytest.raises(PermissionDenied) as info:
        auth.decide(other)
    assert info.value.code == "model_not_allowed"
    assert auth.decide(make_ctx(headers=BEARER)) is LATER  # not identified at the door: on_request asks
