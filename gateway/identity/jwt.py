"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with keys from a JWKS URL.

PyJWT checks signatures and the registered claims (exp, nbf, iss, aud, with `leeway_s` of clock skew); this module
chooses the key, maps the claims to a Principal and turns each failure into a 401 with a message and code of its
own. The JWKS is fetched with httpx at start-up and then in the background when it grows old; only a token whose
`kid` is unknown waits for a fetch, and such fetches happen at most once per `jwks_min_refresh_s`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import jwt

from gateway.config import JwtConfig
from gateway.context import Principal
from gateway.errors import AuthenticationFailed
from gateway.identity.keys import ROLES
from gateway.tasks import spawn
from gateway.types import Clock

logger = logging.getLogger("gateway")

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
ASYMMETRIC = ("RS256", "ES256")


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a virtual key (`sk-gw-...`) never has a dot."""
    return _JWT_SHAPE.fullmatch(token) is not None


def _fail(message: str, code: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, code=code)


class Jwks:
    """The signing keys of a JWKS URL by `kid`, kept fresh off the request path."""

    def __init__(
        self, config: JwtConfig, client: httpx.AsyncClient | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.client = client or httpx.AsyncClient(timeout=config.jwks_timeout_s)
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = 0.0  # monotonic time of the last successful fetch
        self.tried_at = -1e9  # monotonic time of the last attempt, successful or not
        self._lock = asyncio.Lock()
        self._refreshing = False

    async def refresh(self) -> None:
        async with self._lock:
            self.tried_at = self.clock()
            try:
                response = await self.client.get(self.config.jwks_url)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("JWKS %s could not be fetched: %s", self.config.jwks_url, exc)
                return
            keys: dict[str, jwt.PyJWK] = {}
            for data in document.get("keys", []) if isinstance(document, dict) else []:
                try:
                    key = jwt.PyJWK(data)
                except jwt.PyJWTError as exc:  # one odd key (an unsupported kty) must not hide the others
                    logger.warning("JWKS %s: key %s skipped: %s", self.config.jwks_url, data.get("kid"), exc)
                    continue
                if key.key_id:
                    keys[key.key_id] = key
            self.keys = keys
            self.fetched_at = self.clock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        now = self.clock()
        if now - self.fetched_at > self.config.jwks_cache_s and not self._refreshing:
            self._refreshing = True
            spawn(self._background_refresh(), name="jwks-refresh")
        key = self.keys.get(kid)
        if key is None and now - self.tried_at >= self.config.jwks_min_refresh_s:
            await self.refresh()  # an unknown kid may be a key the issuer has just rotated in
            key = self.keys.get(kid)
        return key

    async def _background_refresh(self) -> None:
        try:
            await self.refresh()
        finally:
            self._refreshing = False

    async def close(self) -> None:
        await self.client.aclose()


class JwtValidator:
    def __init__(self, config: JwtConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.jwks = Jwks(config, client) if config.jwks_url else None
        self.algorithms = (["HS256"] if config.hs256_secret else []) + (list(ASYMMETRIC) if self.jwks else [])

    async def open(self) -> None:
        if self.jwks is not None:
            await self.jwks.refresh()

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()

    @staticmethod
    def looks_like(token: str) -> bool:
        return looks_like_jwt(token)

    async def validate(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _fail("The bearer token is not a valid JWT.", "invalid_token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            # Never let the token choose: an HS256 token must not be checked against a public key (CVE-2015-9235).
            raise _fail(f"JWT algorithm {alg!r} is not accepted (accepted: {', '.join(self.algorithms)}).",
                        "unsupported_algorithm")  # fmt: skip
        key: Any
        if alg == "HS256":
            key = self.config.hs256_secret
        else:
            assert self.jwks is not None
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _fail("The JWT header has no `kid`: the signing key cannot be chosen.", "unknown_kid")
            jwk = await self.jwks.get(kid)
            if jwk is None:
                raise _fail(f"The JWT was signed with an unknown key (kid {kid!r}).", "unknown_kid")
            if jwk.algorithm_name != alg:
                raise _fail(f"The JWT's alg {alg} does not match its key's.", "unsupported_algorithm")
            key = jwk.key
        claims = self._decode(token, key, alg)
        return self._principal(claims)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        config = self.config
        options: Any = {"require": list(config.required_claims), "verify_aud": bool(config.audience),
                        "verify_iss": bool(config.issuer)}  # fmt: skip
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=config.audience or None,
                issuer=config.issuer or None,
                leeway=config.leeway_s,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _fail("The JWT has expired.", "token_expired") from None
        except jwt.ImmatureSignatureError:
            raise _fail("The JWT is not valid yet (nbf or iat is in the future).", "token_not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise _fail(f"The JWT's audience is not {config.audience!r}.", "invalid_audience") from None
        except jwt.InvalidIssuerError:
            raise _fail(f"The JWT's issuer is not {config.issuer!r}.", "invalid_issuer") from None
        except jwt.InvalidSignatureError:
            raise _fail("The JWT's signature does not verify.", "invalid_signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _fail(f"The JWT lacks the required claim {exc.claim!r}.", "missing_claim") from None
        except jwt.PyJWTError as exc:
            raise _fail(f"The JWT is invalid: {exc}.", "invalid_token") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        mapping = self.config.claims
        user = _claim(claims, mapping.user)
        if not user:
            raise _fail(f"The JWT lacks the required claim {mapping.user!r}.", "missing_claim")
        role = _claim(claims, mapping.role) or "developer"
        if role not in ROLES:
            raise _fail(f"The JWT's {mapping.role!r} claim is not a known role.", "invalid_claim")
        return Principal(
            name=user,
            key_id="jwt",
            project=_claim(claims, mapping.project) or "default",
            team=_claim(claims, mapping.team),
            user=user,
            role=role,
            expires_at=float(claims.get("exp") or 0.0),
            source="jwt",
        )


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""
