"""Authorization for endpoints outside the pipeline (/admin/*): the caller's identity, then the role matrix.

Admin endpoints need a key or token whatever `auth.mode` says: mode `none` opens /v1, never /admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gateway.api.flow import CONNECTION_CLOSE, unread_body
from gateway.api.http import JSON_TYPE, encode_headers, scope_id_headers, send_json
from gateway.context import Principal
from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable
from gateway.identity import roles
from gateway.identity.authenticator import presented_key
from gateway.store.base import StoreUnavailable, TraceStore, trace_store
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Gateway


async def authorize(gateway: Gateway, scope: Scope, route: str) -> Principal:
    """The caller, if the matrix lets its role call `route`; else AuthenticationFailed or PermissionDenied."""
    principal = await gateway.identity.identify(presented_key(scope["headers"]))
    roles.require(route, principal)
    return principal


def visible_project(principal: Principal, asked: str | None) -> str | None:
    """Project isolation: an admin chooses the project it asks for (None: every project); everyone else is held to
    their own, whatever they ask."""
    return asked if principal.role == "admin" else principal.project


def require_traces(gateway: Gateway) -> TraceStore:
    """The store that reads the records back; InvalidRequest when there is none."""
    store = trace_store(gateway.store)
    if store is None:
        raise InvalidRequest("No store keeps the records: set telemetry.store.")
    return store


class AdminEndpoint:
    """An endpoint outside the pipeline: `handle` returns a status and a JSON-able body, or raises a
    GatewayError; both are rendered here, in one place, with the request id."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [JSON_TYPE, *scope_id_headers(scope)]
        try:
            status, body = await self.handle(scope, receive)
        except StoreUnavailable:
            error: GatewayError = ServiceUnavailable("The store cannot be reached; try again shortly.")
        except GatewayError as exc:
            error = exc
        else:
            await send_json(send, status, orjson.dumps(body), headers)
            return
        # Callers are authorized before their body is read: a refused one may leave a large body unread.
        if unread_body(scope["headers"]):
            headers.append(CONNECTION_CLOSE)
        await send_json(send, error.status_code, error.to_json(), headers + encode_headers(error.headers))

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        raise NotImplementedError
