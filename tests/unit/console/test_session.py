"""Session cookies and CSRF tokens: what is signed here reads back; anything else, or anything late, does not."""

from __future__ import annotations

import time

from gateway.console.session import Signer
from gateway.context import Principal

SECRET = "s" * 32


def test_a_key_session_reads_back_and_holds_no_key():
    signer = Signer(SECRET, 60)
    session = signer.new_session(key_digest="ab" * 32)
    cookie = signer.dump(session)
    assert signer.load(cookie) == session
    assert Signer(SECRET, 60).load(cookie) == session  # the same secret: another worker reads it


def test_a_jwt_session_keeps_its_principal_and_ends_with_the_token():
    signer = Signer(SECRET, 3600)
    exp = time.time() + 30
    principal = Principal(name="ann", key_id="jwt:ann", project="A", role="viewer", expires_at=exp, source="jwt")
    session = signer.new_session(principal=principal)
    assert session.expires_at == exp
    loaded = signer.load(signer.dump(session))
    assert loaded is not None
    assert loaded.principal == principal
    assert signer.load(signer.dump(session), now=exp + 1) is None


def test_tampered_foreign_or_expired_cookies_are_no_session():
    signer = Signer(SECRET, 60)
    cookie = signer.dump(signer.new_session(key_digest="ab" * 32))
    body, _, mac = cookie.partition(".")
    assert signer.load(body + "." + mac[:-2] + "AA") is None
    assert signer.load(body[:-2] + "xx." + mac) is None
    assert Signer("t" * 32, 60).load(cookie) is None
    assert Signer("", 60).load(cookie) is None  # a generated secret: its own sessions only
    assert signer.load(cookie, now=time.time() + 61) is None
    for junk in ("", "no-dot", ".", "a.b", "%%%.%%%"):
        assert signer.load(junk) is None


def test_csrf_tokens_are_bound_to_the_session():
    signer = Signer(SECRET, 60)
    a, b = signer.new_session(key_digest="a" * 64), signer.new_session(key_digest="a" * 64)
    assert signer.csrf_ok(a.sid, signer.csrf_token(a.sid))
    assert not signer.csrf_ok(b.sid, signer.csrf_token(a.sid))
    assert not signer.csrf_ok(a.sid, "")


def test_the_session_key_is_the_secret_else_derived_from_the_admin_key_else_random():
    from gateway.console.session import session_key

    assert session_key(SECRET, "sk-admin") == SECRET.encode()
    derived = session_key("", "sk-admin")
    assert derived == session_key("", "sk-admin")  # every worker and replica of one configuration
    assert derived not in (b"", b"sk-admin", session_key("", "sk-other-admin"))
    cookie = Signer(derived, 60).dump(Signer(derived, 60).new_session(key_digest="ab" * 32))
    assert Signer(session_key("", "sk-admin"), 60).load(cookie) is not None
    assert session_key("", "") == b""
    assert Signer(b"", 60).key != Signer(b"", 60).key  # random, per process
