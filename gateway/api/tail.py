"""WS /api/v1/traces/tail?<the filters of GET /api/v1/traces>: records as they are written, one JSON message each.

    {"type": "trace", "data": {...the record...}}
    {"type": "dropped", "count": n}          the subscriber read too slowly and missed n records
    {"type": "error", "error": {...}}        OpenAI's error shape, then the socket closes (1008)
    {"type": "ping"}                        every 20 s of quiet; the key is checked again then

The key goes in the Authorization header as everywhere else. A non-admin sees its own project only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.api.access import authorize
from gateway.api.http import query_pairs
from gateway.api.traces import scoped
from gateway.errors import GatewayError
from gateway.store.trace_sql import parse_trace_query
from gateway.telemetry.tail import Subscription
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.context import Principal
    from gateway.runtime import Gateway

_POLICY_VIOLATION = 1008
_PING_S = 20.0  # a quiet tail still says it is alive, so that proxies keep the connection open
_ROUTE = "GET /api/v1/traces/tail"


class TailEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        socket = WebSocket(scope, receive, send)
        await socket.accept()
        try:
            principal = await self.authorize(scope)
            query = scoped(parse_trace_query(query_pairs(scope), allow=("similar_to",)), principal)
        except GatewayError as exc:
            await _refuse(socket, exc)
            return
        tail = self.gateway.tail
        subscription = tail.subscribe(query)
        reader = asyncio.ensure_future(_until_closed(socket))
        try:
            await _forward(socket, subscription, reader, lambda: self.authorize(scope))
        except GatewayError as exc:  # the key was revoked, or its role changed, while the tail was open
            await _refuse(socket, exc)
        except WebSocketDisconnect:
            pass
        finally:
            tail.unsubscribe(subscription)
            reader.cancel()

    async def authorize(self, scope: Scope) -> Principal:
        """The caller, allowed on the tail: by its key here, by its session in the console's live mode."""
        return await authorize(self.gateway, scope, _ROUTE)


async def _refuse(socket: WebSocket, exc: GatewayError) -> None:
    await socket.send_bytes(orjson.dumps({"type": "error", "error": orjson.loads(exc.to_json())["error"]}))
    await socket.close(_POLICY_VIOLATION)


async def _forward(
    socket: WebSocket,
    subscription: Subscription,
    reader: asyncio.Future[None],
    reauthorize: Callable[[], Awaitable[object]],
) -> None:
    """Send what the subscription receives until the client closes; every _PING_S, check the key again (a revoked
    key stops reading within that time) and say the tail is alive."""
    while not reader.done():
        getter: asyncio.Future[Any] = asyncio.ensure_future(subscription.queue.get())
        waiting: set[asyncio.Future[Any]] = {getter, reader}
        done, _ = await asyncio.wait(waiting, timeout=_PING_S, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            if not done:
                await reauthorize()
                await socket.send_bytes(b'{"type": "ping"}')
            continue
        if subscription.dropped:
            count, subscription.dropped = subscription.dropped, 0
            await socket.send_bytes(orjson.dumps({"type": "dropped", "count": count}))
        await socket.send_bytes(orjson.dumps({"type": "trace", "data": getter.result()}))


async def _until_closed(socket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return
