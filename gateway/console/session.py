"""Console sessions: what sign-in exchanges a key or a JWT for, kept in a signed cookie (no server-side state).

The cookie is `payload.signature`, both base64url: the payload is JSON, the signature its HMAC-SHA256 under the
console's secret. A key's session holds the key's SHA-256 (never the key), so every page identifies it again
through the Authenticator: a revoked or expired key ends its sessions at once (within auth.cache_ttl_s on other
workers). A JWT's session holds the principal the token gave and ends with the token's exp at the latest.

CSRF: every form carries a token bound to the session (an HMAC of its random id), checked on every POST.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.context import Principal

COOKIE = "gw_console"
PRE_COOKIE = "gw_console_pre"  # the sign-in form's double-submit token, before there is a session
_PRINCIPAL_FIELDS = ("name", "key_id", "project", "team", "user", "role", "expires_at", "source")


@dataclass(frozen=True, slots=True)
class Session:
    sid: str  # random, names this session in its CSRF token
    expires_at: float
    key_digest: str = ""  # a key's session: identified again on every page
    principal: Principal | None = None  # a JWT's session: the token's principal as it was at sign-in


def session_key(secret: str, admin_key: str) -> bytes:
    """The key that signs sessions: console.session_secret; else one derived from auth.admin_key (every worker and
    replica of one configuration derives the same, and rotating the admin key ends the sessions); else b"" (the
    Signer makes a random one: sessions of this process only)."""
    if secret:
        return secret.encode()
    if admin_key:
        return hmac.new(admin_key.encode(), b"gateway console sessions", hashlib.sha256).digest()
    return b""


class Signer:
    """Signs and reads session cookies and CSRF tokens with one key (random when given none)."""

    def __init__(self, key: bytes | str, ttl_s: float) -> None:
        key = key.encode() if isinstance(key, str) else key
        self.key = key or os.urandom(32)
        self.ttl_s = ttl_s

    @staticmethod
    def now() -> float:
        return time.time()

    def new_session(self, *, key_digest: str = "", principal: Principal | None = None) -> Session:
        expires = time.time() + self.ttl_s
        if principal is not None and principal.expires_at:
            expires = min(expires, principal.expires_at)
        return Session(os.urandom(16).hex(), expires, key_digest, principal)

    def dump(self, session: Session) -> str:
        payload: dict[str, Any] = {"sid": session.sid, "exp": session.expires_at}
        if session.key_digest:
            payload["kd"] = session.key_digest
        if session.principal is not None:
            payload["p"] = {name: getattr(session.principal, name) for name in _PRINCIPAL_FIELDS}
        body = _b64(orjson.dumps(payload))
        return f"{body}.{_b64(self._mac(body.encode()))}"

    def load(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session in the cookie; None when there is none, it was not signed here, or it has expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        try:
            given = _unb64(signature)
            if not hmac.compare_digest(given, self._mac(body.encode())):
                return None
            payload = orjson.loads(_unb64(body))
            session = Session(
                sid=str(payload["sid"]),
                expires_at=float(payload["exp"]),
                key_digest=str(payload.get("kd", "")),
                principal=Principal(**payload["p"]) if "p" in payload else None,
            )
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            return None
        if session.expires_at <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, sid: str) -> str:
        return _b64(self._mac(b"csrf:" + sid.encode()))

    def csrf_ok(self, sid: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf_token(sid).encode())

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self.key, data, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
