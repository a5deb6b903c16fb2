"""build_app(config) -> the ASGI application. The lifespan opens the Gateway's components and closes them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from gateway import memory
from gateway.api.admin import DeploymentsEndpoint
from gateway.api.analytics import SimilarityAnalyticsEndpoint, TelemetryStatusEndpoint, TimeseriesEndpoint
from gateway.api.anthropic import CountTokensEndpoint, MessagesEndpoint
from gateway.api.cache import CachePurgeEndpoint
from gateway.api.features import FeaturesEndpoint
from gateway.api.health import Live, MetricsEndpoint, Ready
from gateway.api.http import scope_id_headers
from gateway.api.keys import KeysEndpoint
from gateway.api.openai import CompletionEndpoint, ModelsEndpoint
from gateway.api.policies import PoliciesEndpoint
from gateway.api.responses import ResponsesEndpoint, StoredResponsesEndpoint
from gateway.api.tail import TailEndpoint
from gateway.api.traces import TraceExportEndpoint, TracesEndpoint
from gateway.api.usage import UsageEndpoint
from gateway.api.usage_report import UsageReportEndpoint
from gateway.config import GatewayConfig
from gateway.console import console_mount
from gateway.errors import GatewayError, InternalError, InvalidRequest, MethodNotAllowed, NotFound
from gateway.load import load_config
from gateway.runtime import Gateway
from gateway.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("gateway")
_GC_YOUNG_THRESHOLD = 20_000
# A worker thread running Python (the SQLite store's thread sums a batch's usage rollups, ~1.4 ms for 1,000 rows)
# keeps the GIL until this long after the event loop asks for it: Python's default, 5 ms, let the loop wait for the
# whole batch (bench/gil_wait.py: the loop's 1 ms timer late by 1.1 ms at p50, 0.15 ms at 1 ms).
_SWITCH_INTERVAL_S = 0.001


def build_app(config: GatewayConfig, *, access_log_stream: Any = None) -> FastRoutes:
    gateway = Gateway(config, access_log_stream=access_log_stream)
    models = ModelsEndpoint(gateway)
    deployments = DeploymentsEndpoint(gateway)
    keys = KeysEndpoint(gateway)
    traces, export = TracesEndpoint(gateway), TraceExportEndpoint(gateway)
    policies = PoliciesEndpoint(gateway)
    features = FeaturesEndpoint(gateway)
    usage = UsageEndpoint(gateway)
    completions: dict[str, ASGIApp] = {
        f"/v1/{endpoint}": CompletionEndpoint(gateway, endpoint)
        for endpoint in ("chat/completions", "completions", "embeddings")
    }
    completions["/v1/messages"] = MessagesEndpoint(gateway)  # Anthropic's Messages API, same pipeline
    completions["/v1/responses"] = ResponsesEndpoint(gateway)  # OpenAI's Responses API, same pipeline
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in completions.items()),
        Route("/v1/messages/count_tokens", CountTokensEndpoint(gateway), methods=["POST"]),
        Route("/v1/responses/{id}", StoredResponsesEndpoint(gateway), methods=["GET", "DELETE"]),
        Route("/v1/responses/{id}/input_items", StoredResponsesEndpoint(gateway, input_items=True), methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models, methods=["GET"]),
        Route("/admin/deployments", deployments, methods=["GET"]),
        Route("/admin/deployments/{deployment_id:path}/{action}", deployments, methods=["POST"]),
        Route("/admin/keys", keys, methods=["GET", "POST"]),
        Route("/admin/keys/{key_id}", keys, methods=["PATCH"]),
        Route("/admin/keys/{key_id}/{action}", keys, methods=["POST"]),
        Route("/admin/usage", usage, methods=["GET"]),
        Route("/admin/usage/reset", usage, methods=["POST"]),
        Route("/admin/cache/purge", CachePurgeEndpoint(gateway), methods=["POST"]),
        Route("/api/v1/analytics/similarity", SimilarityAnalyticsEndpoint(gateway), methods=["GET"]),
        Route("/api/v1/analytics/{kind}", TimeseriesEndpoint(gateway), methods=["GET"]),  # after similarity
        Route("/api/v1/usage", UsageReportEndpoint(gateway), methods=["GET"]),
        Route("/api/v1/traces", traces, methods=["GET"]),
        Route("/api/v1/traces/export", export, methods=["GET"]),  # before /api/v1/traces/{id}
        Route("/api/v1/traces/{id}", traces, methods=["GET"]),
        Route("/api/v1/traces/{id}/export", export, methods=["GET"]),
        Route("/api/v1/telemetry/status", TelemetryStatusEndpoint(gateway), methods=["GET"]),
        WebSocketRoute("/api/v1/traces/tail", TailEndpoint(gateway)),
        Route("/api/v1/features", features, methods=["GET"]),
        Route("/api/v1/features/{flag}", features, methods=["PUT", "DELETE"]),
        Route("/api/v1/policies", policies, methods=["GET", "POST"]),
        Route("/api/v1/policies/{name}", policies, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/api/v1/policies/{name}/{action}", policies, methods=["GET", "POST"]),
        Route("/health/live", Live(), methods=["GET"]),
        Route("/health/ready", Ready(gateway), methods=["GET"]),
        Route("/metrics", MetricsEndpoint(gateway), methods=["GET"]),
    ]
    if config.console.enabled:  # /ui: a Mount of the Starlette app, never on the completion endpoints' path
        routes.append(console_mount(gateway))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.open()
        # Everything made at start-up lives as long as the process: keep it out of the collector's full passes.
        gc.freeze()
        # A request allocates a thousand-odd objects before it frees them, so at the default threshold (700) the
        # young generation was collected several times a request, promoting in-flight ones to be walked again:
        # 16-27 µs of CPU a request (gc.callbacks, bench S1). Reference counting frees almost all of it anyway;
        # the collector is for cycles, which can wait for 20,000 net allocations.
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        memory.configure()  # in each worker: large bodies' memory goes back to the system when freed
        restore = _drain_on_sigterm(gateway)
        try:
            yield
        finally:
            gateway.draining = True
            restore()
            await gateway.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.gateway = gateway
    return FastRoutes(app, completions)


class FastRoutes:
    """Sends POST requests on the completion endpoints straight to their handler, past Starlette's router and
    its two error middlewares (about a tenth of the gateway's own time per request); everything else, the
    lifespan included, goes to the Starlette app. The completion endpoints guard their own errors."""

    def __init__(self, app: Starlette, routes: dict[str, ASGIApp]) -> None:
        self.app = app
        self.routes = routes
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _drain_on_sigterm(gateway: Gateway) -> Any:
    """Turn /health/ready to 503 as soon as SIGTERM arrives; after server.drain_delay_s (time for a load balancer
    to see it), let uvicorn's own handler stop accepting and wait for in-flight requests; after drain_timeout_s
    more, end those still running (gateway/api/watch.py: an error event and [DONE] for a stream, a 503 for a
    whole request, records that say so)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return lambda: None
    loop = asyncio.get_running_loop()
    server = gateway.config.server

    def stop(signum: int, frame: Any) -> None:
        assert callable(previous)
        previous(signum, frame)
        loop.call_later(server.drain_timeout_s, cut)

    def cut() -> None:
        count = gateway.open_requests.cut()
        if count:
            logger.warning("drain time over: %d request(s) still running were ended (server_shutting_down)", count)

    def handler(signum: int, frame: Any) -> None:
        if not callable(previous):
            return
        if gateway.draining:  # a second SIGTERM: stop now
            previous(signum, frame)
            return
        gateway.draining = True
        logger.info("SIGTERM: draining (ready is 503), stopping in %g s", server.drain_delay_s)
        # A signal handler runs between two bytecodes of whatever the loop was doing: it only hands over.
        loop.call_soon_threadsafe(loop.call_later, server.drain_delay_s, stop, signum, frame)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding test, say): nothing to hook
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _reply(request: Request, exc: GatewayError) -> Response:
    headers = {name.decode(): value.decode() for name, value in scope_id_headers(request.scope)} | exc.headers
    return Response(exc.to_json(), status_code=exc.status_code, headers=headers, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: GatewayError = NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    else:
        error = InvalidRequest(str(exc.detail))
    return _reply(request, error)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _reply(request, InternalError())


def app_from_env() -> FastRoutes:
    """The factory that uvicorn's workers import: the config path comes from GATEWAY_CONFIG."""
    return build_app(load_config(os.environ.get("GATEWAY_CONFIG", "gateway.yaml")))
