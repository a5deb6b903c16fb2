"""Authenticator: a bearer token to a Principal — a key from the config, a virtual key, or a JWT.

Config keys are a dict by SHA-256 digest, so the lookup's timing depends on the digest, never on how much of a
real key the caller guessed; their ids come from their names (config_key_id), never from the digest. Virtual
keys come from the store through the per-worker KeyCache; JWTs (three base64url parts) go to the JwtValidator.
Every failure is an AuthenticationFailed with a code of its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.config import AuthConfig
from gateway.context import Principal
from gateway.errors import AuthenticationFailed, ServiceUnavailable
from gateway.identity.keys import ADMIN_KEY_ID, KeyCache, config_key_id, key_digest
from gateway.store.base import KeyStore, StoreUnavailable
from gateway.types import Clock

if TYPE_CHECKING:
    from gateway.identity.jwt import JwtValidator

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from `Authorization: Bearer ...`, or from `api-key` as Azure OpenAI clients send it."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if name == b"api-key":
            return value.decode("latin-1").strip() or None
    return None


class Authenticator:
    def __init__(self, config: AuthConfig, keys: KeyStore | None, *, clock: Clock = time.time) -> None:
        self.clock = clock  # wall-clock time: expiries and revocations are dates
        self.principals: dict[str, Principal] = {}
        for key in config.keys:
            digest = key.key_sha256.lower() if key.key_sha256 else key_digest(key.key)
            self.principals[digest] = Principal(
                name=key.name,
                key_id=config_key_id(key.name),
                project=key.project,
                team=key.team,
                user=key.user,
                role=key.role,
                metadata=dict(key.metadata),
            )
        if config.admin_key:
            digest = key_digest(config.admin_key)
            self.principals[digest] = Principal(name="admin", key_id=ADMIN_KEY_ID, role="admin")
        # Config keys by the token itself, once a token's digest has matched one: the same answer without a SHA-256
        # per request (some 9,000 instructions). Only a token that matched gets in, so it holds at most one entry
        # per config key, whatever callers send; a dict lookup compares the strings only once their (randomly
        # keyed) hashes are equal, so its timing says nothing of how much of a key a caller guessed.
        self.seen: dict[str, Principal] = {}
        self.store = keys
        self.cache = (
            KeyCache(
                keys,
                ttl_s=config.cache_ttl_s,
                negative_ttl_s=config.negative_cache_ttl_s,
                lookup_timeout_s=config.lookup_timeout_s,
            )
            if keys
            else None
        )
        self.jwt: JwtValidator | None = None
        if config.jwt.enabled:
            # Imported only when JWTs are on: PyJWT with cryptography is some 11 MB of the process's memory.
            from gateway.identity.jwt import JwtValidator

            self.jwt = JwtValidator(config.jwt)

    async def open(self) -> None:
        if self.jwt is not None:
            await self.jwt.open()

    async def close(self) -> None:
        if self.jwt is not None:
            await self.jwt.close()

    async def identify(self, token: str | None) -> Principal:
        if not token:
            raise AuthenticationFailed(NO_KEY)
        if self.jwt is not None and self.jwt.looks_like(token):
            return await self.jwt.validate(token)
        principal = self.seen.get(token)
        if principal is not None:
            return principal
        digest = key_digest(token)
        principal = self.principals.get(digest)
        if principal is not None:
            self.seen[token] = principal
            return principal
        return await self.identify_digest(digest)

    async def identify_digest(self, digest: str) -> Principal:
        """The principal of the key whose SHA-256 is `digest`: what a console session keeps instead of the key, so
        that each page checks the key again (revoked, expired) without holding it."""
        principal = self.principals.get(digest)
        if principal is not None:
            return principal
        if self.cache is not None:
            try:
                lookup = await self.cache.get(digest)
            except StoreUnavailable:
                raise ServiceUnavailable("The key store cannot be reached; try again shortly.") from None
            now = self.clock()
            if lookup.revoked_at is not None and lookup.revoked_at <= now:
                raise AuthenticationFailed("This API key has been revoked.", code="key_revoked")
            principal = lookup.principal
            if principal is not None:
                if principal.expires_at and principal.expires_at <= now:
                    raise AuthenticationFailed("This API key has expired.", code="key_expired")
                return principal
        raise AuthenticationFailed("Incorrect API key provided.")
