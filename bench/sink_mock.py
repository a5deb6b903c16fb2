"""A mock Langfuse and OTLP collector for bench/reference-telemetry.yaml: takes every batch and says so, at once.

    .venv/bin/python bench/sink_mock.py PORT

It counts what it received (GET /stats), so that a run can check that the sinks kept up.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

received = {"langfuse_events": 0, "otlp_traces": 0, "otlp_metrics": 0}


async def langfuse(request: Request) -> JSONResponse:
    batch = orjson.loads(await request.body())["batch"]
    received["langfuse_events"] += len(batch)
    return JSONResponse({"successes": [{"id": e["id"], "status": 201} for e in batch], "errors": []}, 207)


async def traces(request: Request) -> JSONResponse:
    await request.body()
    received["otlp_traces"] += 1
    return JSONResponse({})


async def metrics(request: Request) -> JSONResponse:
    await request.body()
    received["otlp_metrics"] += 1
    return JSONResponse({})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(received)


app = Starlette(
    routes=[
        Route("/api/public/ingestion", langfuse, methods=["POST"]),
        Route("/v1/traces", traces, methods=["POST"]),
        Route("/v1/metrics", metrics, methods=["POST"]),
        Route("/stats", stats),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
