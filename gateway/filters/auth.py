"""auth: who is calling. Mode `none` lets everyone in as `anonymous`; mode `keys` accepts the keys in the config.

Keys are held only as SHA-256 digests. A presented key is hashed and looked up by digest, so the lookup's timing
depends on the digest, never on how much of a real key the caller guessed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from gateway.context import Principal, RequestContext
from gateway.errors import AuthenticationFailed
from gateway.pipeline import Reply

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(ctx: RequestContext) -> str | None:
    """The key from `Authorization: Bearer ...`, or from `api-key` as Azure OpenAI clients send it."""
    for name, value in ctx.headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if name == b"api-key":
            return value.decode("latin-1").strip() or None
    return None


class AuthFilter:
    name = "auth"

    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config.auth
        self.mode = config.mode
        self.principals: dict[str, Principal] = {}
        for key in config.keys:
            digest = key.key_sha256.lower() if key.key_sha256 else key_digest(key.key)
            self.principals[digest] = Principal(
                name=key.name,
                key_id=digest[:12],
                project=key.project,
                team=key.team,
                user=key.user,
                role=key.role,
                metadata=dict(key.metadata),
            )
        if config.admin_key:
            digest = key_digest(config.admin_key)
            self.principals[digest] = Principal(name="admin", key_id=digest[:12], role="admin")

    def identify(self, ctx: RequestContext) -> Principal | None:
        """The principal of the presented key, whatever the mode (admin endpoints always need a key)."""
        key = presented_key(ctx)
        return self.principals.get(key_digest(key)) if key else None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if self.mode == "none":
            return None
        key = presented_key(ctx)
        if key is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        principal = self.principals.get(key_digest(key))
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        ctx.principal = principal
        return None

    async def on_response(self, ctx: RequestContext, reply: Reply) -> Reply | None:
        return None
