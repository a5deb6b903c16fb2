"""gateway/console/reveal.py: a new key sealed for the page that shows it, readable by its session only, once fresh."""

from __future__ import annotations

from gateway.console.reveal import TTL_S, Sealer


def test_only_the_same_session_opens_it_before_it_expires():
    sealer = Sealer(b"k" * 32)
    sealed = sealer.seal("sid-1", {"key": "sk-gw-secret"}, now=1000.0)
    assert "sk-gw-secret" not in sealed
    assert sealer.open("sid-1", sealed, now=1000.0 + TTL_S - 1) == {"key": "sk-gw-secret"}
    assert sealer.open("sid-2", sealed, now=1000.0) is None  # another session's cookie
    assert sealer.open("sid-1", sealed, now=1000.0 + TTL_S) is None  # expired
    assert Sealer(b"x" * 32).open("sid-1", sealed, now=1000.0) is None  # another console's key
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert sealer.open("sid-1", tampered, now=1000.0) is None
    for junk in (None, "", "!!!", "e30"):
        assert sealer.open("sid-1", junk, now=1000.0) is None
