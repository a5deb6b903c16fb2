"""A new key, carried from the POST that made it to the page that shows it (POST-redirect-GET), once.

The key cannot be put in the redirect's URL (history, logs, Referer), nor kept in this process's memory (the GET
may reach another worker), and the store keeps only its hash. So the POST's answer sets a short-lived cookie
holding it sealed (AES-GCM under a key derived from the console's session key, which every worker shares), bound
to the session (its id is the associated data), and the GET that shows it clears the cookie: a reload finds none
and says the key was shown already, instead of making another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Any

import orjson

COOKIE = "gw_console_new_key"
TTL_S = 300  # the redirect follows at once; a browser that stops in between loses nothing but this cookie


class Sealer:
    def __init__(self, session_key: bytes) -> None:
        self._key = hmac.new(session_key, b"console: a new key between POST and GET", hashlib.sha256).digest()
        self._aead: Any = None

    def _cipher(self) -> Any:
        # cryptography is imported when a key is first shown, not with the console: some MB of a process that
        # never makes a key from its console (tests/unit/test_lazy_imports.py).
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self._key)
        return self._aead

    def seal(self, sid: str, data: dict[str, Any], *, now: float | None = None) -> str:
        nonce = os.urandom(12)
        plain = orjson.dumps({"exp": (time.time() if now is None else now) + TTL_S, "data": data})
        sealed = nonce + self._cipher().encrypt(nonce, plain, sid.encode())
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, sid: str, value: str | None, *, now: float | None = None) -> dict[str, Any] | None:
        """What `seal` put in, for the same session and before it expires; None otherwise."""
        if not value:
            return None
        from cryptography.exceptions import InvalidTag

        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            payload = orjson.loads(self._cipher().decrypt(sealed[:12], sealed[12:], sid.encode()))
        except (ValueError, binascii.Error, InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) <= (time.time() if now is None else now):
            return None
        data = payload.get("data")
        return data if isinstance(data, dict) else None
