"""Authorization for endpoints outside the pipeline (/admin/*): the caller's identity, then the role matrix.

Admin endpoints need a key or token whatever `auth.mode` says: mode `none` opens /v1, never /admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import roles
from gateway.context import Principal
from gateway.filters.auth import presented_key
from gateway.types import Scope

if TYPE_CHECKING:
    from gateway.runtime import Gateway


async def authorize(gateway: Gateway, scope: Scope, route: str) -> Principal:
    """The caller, if the matrix lets its role call `route`; else AuthenticationFailed or PermissionDenied."""
    principal = await gateway.identity.identify(presented_key(scope["headers"]))
    roles.require(route, principal)
    return principal
