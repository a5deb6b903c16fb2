"""auth: who is calling, and may they call this. Mode `none` lets everyone in as `anonymous`; mode `keys` needs
a config key, a virtual key or a JWT (gateway/identity/), checked by `identify` from the headers before the body
is read. Then, in the pipeline, the role matrix (gateway/identity/roles.py) and the key's allowed models (which need the
body) are checked, before any later filter spends anything on the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway.context import ANONYMOUS, Principal, RequestContext
from gateway.errors import PermissionDenied
from gateway.filters.base import LATER, Later, Stage
from gateway.identity import roles
from gateway.identity.authenticator import presented_key
from gateway.identity.keys import key_digest
from gateway.reply import Reply

if TYPE_CHECKING:
    from gateway.components import Components

__all__ = ["AuthFilter", "key_digest", "presented_key"]


class Identity(Protocol):
    """Who holds a key (gateway/identity/authenticator.py): a Principal, or AuthenticationFailed."""

    async def identify(self, token: str | None) -> Principal: ...


class AuthFilter(Stage):
    name = "auth"
    at_door = True
    decides_now = True  # a caller identified at the door (every pipeline request) needs no await here

    def __init__(self, identity: Identity, mode: str, known: dict[str, Principal] | None = None) -> None:
        self.mode = mode
        self.identity = identity
        # Tokens whose principal is known without a lookup that awaits (the authenticator's config keys already
        # matched): identify_now answers for them without a coroutine.
        self.known: dict[str, Principal] = known if known is not None else {}

    @classmethod
    def build(cls, components: Components) -> AuthFilter:
        return cls(components.identity, components.config.auth.mode, components.identity.seen)

    async def identify(self, ctx: RequestContext) -> None:
        """Who is calling, and whether their role may call the route, from the headers alone: the endpoints call
        it before they read the body, so that a request without a valid key, or of a role the route is closed to,
        is refused at the cost of its headers (AuthenticationFailed, PermissionDenied)."""
        if self.mode != "none":
            ctx.principal = principal = await self.identity.identify(presented_key(ctx.headers))
            # An ingress in another API (tags.api: /v1/messages, /v1/responses) has its own entry in the matrix.
            route = ctx.tags.get("api") or ctx.endpoint
            roles.require(roles.V1_ROUTES.get(route, route), principal)

    def identify_now(self, ctx: RequestContext) -> bool:
        """identify for a token already known (a config key), without a coroutine; False for any other."""
        if self.mode == "none":
            return True
        token = presented_key(ctx.headers)
        principal = self.known.get(token) if token else None
        if principal is None:
            return False
        ctx.principal = principal
        route = ctx.tags.get("api") or ctx.endpoint
        roles.require(roles.V1_ROUTES.get(route, route), principal)
        return True

    def decide(self, ctx: RequestContext) -> Later | None:
        """on_request without a coroutine for a caller identified at the door (every pipeline request); LATER for
        one that was not."""
        if self.mode == "none":
            return None
        principal = ctx.principal
        if principal is ANONYMOUS:  # not identified at the door (the models list, a direct caller)
            return LATER
        allowed = principal.allowed_models
        if allowed and ctx.endpoint != "models" and ctx.model not in allowed:
            raise _not_allowed(ctx)
        return None

    async def on_request(self, ctx: RequestContext) -> Reply | None:
        if self.mode == "none":
            return None
        if ctx.principal is ANONYMOUS:
            await self.identify(ctx)
        allowed = ctx.principal.allowed_models
        if allowed and ctx.endpoint != "models" and ctx.model not in allowed:
            raise _not_allowed(ctx)
        return None


def _not_allowed(ctx: RequestContext) -> PermissionDenied:
    return PermissionDenied(f"This key may not use the model {ctx.model!r}.", code="model_not_allowed", param="model")
