"""Real servers on loopback for tests: the gateway under uvicorn, and an OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread on a free port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # generous: a loaded machine starts slowly, a broken one fails anyway
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path, *args: str, name: str = "gateway", port: int | None = None, **overrides: object
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`gateway serve` in a process of its own, on a free port (or `port`: a replica restarted where its load
    balancer expects it), with base_config plus overrides. The log `<name>.log` is appended to, so a process
    started again under the same name keeps the first one's lines."""
    from tests.conftest import base_config, merge
    from tests.services import free_port

    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(merge(base_config(tmp_path), overrides)))
    port = port or free_port()
    log = (tmp_path / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers of --workers go with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / f"{name}.log").read_text())
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.wait(timeout=10)
        log.close()


@dataclass
class Upstream:
    """An OpenAI-compatible upstream that records what it receives.

    The model name steers it: `error-<status>`, `slow-<ms>`, `stream-delay-<ms>` (between chunks), `nousage`
    (no usage block, as some servers do), `badjson`.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False  # model `toggle` answers 500 while this is set
    cancelled_streams: int = 0
    finished_streams: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/openai/deployments/{name}/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> dict[str, Any]:
        body = orjson.loads(await request.body())
        self.requests.append(
            {
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return body

    async def chat(self, request: Request) -> Response:
        body = await self._record(request)
        model = body.get("model") or request.path_params.get("name", "")
        if model.startswith("error-"):
            status = int(model.split("-")[1])
            headers = {"retry-after": "2"} if status == 429 else {}
            error = {"message": f"upstream says {status}", "type": "upstream_type", "param": None, "code": "up_code"}
            return JSONResponse({"error": error}, status_code=status, headers=headers)
        if model == "toggle" and self.failing:
            return JSONResponse({"error": {"message": "toggled down", "type": "server_error"}}, status_code=500)
        if model == "badjson":
            return Response(b"<html>bad gateway</html>", status_code=502, media_type="text/html")
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": 3,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
        if body.get("stream"):
            delay = int(model.split("-")[2]) / 1000 if model.startswith("stream-delay-") else 0.0
            include_usage = (body.get("stream_options") or {}).get("include_usage") and model != "nousage"
            return StreamingResponse(self._stream(model, delay, usage if include_usage else None),
                                     media_type="text/event-stream")  # fmt: skip
        answer = {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"},
                         "finish_reason": "stop"}],
        }  # fmt: skip
        if model != "nousage":
            answer["usage"] = usage
        return JSONResponse(answer, headers={"x-upstream": "yes"})

    async def _stream(self, model: str, delay: float, usage: dict[str, Any] | None) -> Any:
        head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model}
        pieces = ["Hel", "lo", " there", "!"] + (["."] * 200 if delay else [])
        try:
            yield (
                b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + b"\n\n"
            )
            for piece in pieces:
                if delay:
                    await asyncio.sleep(delay)
                chunk = {**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield (
                b"data: "
                + orjson.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                + b"\n\n"
            )
            if usage:
                yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"
            self.finished_streams += 1
        except BaseException:
            self.cancelled_streams += 1
            raise

    async def embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        return JSONResponse({"object": "list", "model": body["model"], "data": [{"object": "embedding", "index": 0,
                             "embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}})  # fmt: skip

    async def completions(self, request: Request) -> Response:
        body = await self._record(request)
        return JSONResponse({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": body["model"],
                             "choices": [{"index": 0, "text": "done", "finish_reason": "stop", "logprobs": None}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip


WRITE_KEY = "2Ab3wrItEkEy9"  # a RudderStack source's write key, for DataPlane


class DataPlane:
    """RudderStack's /v1/batch, as strict as it is about the source's credentials; what it took, event by event."""

    def __init__(self, write_key: str) -> None:
        self.write_key = write_key
        self.events: list[dict] = []
        self.refused = 0

    def app(self) -> Starlette:
        async def batch(request: Request) -> Response:
            scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
            user, _, password = base64.b64decode(encoded or "").decode().partition(":")
            if scheme != "Basic" or user != self.write_key or password:
                self.refused += 1
                return JSONResponse({"message": "Invalid write key"}, status_code=401)
            assert request.headers["content-type"] == "application/json"
            body = orjson.loads(await request.body())
            assert set(body) == {"batch", "sentAt"}
            for event in body["batch"]:
                assert event["type"] == "track"
                assert event["event"] == "LLM Request"
                assert event.get("userId") or event.get("anonymousId")
                assert isinstance(event["properties"], dict)
                assert event["timestamp"].endswith("Z")
            self.events += body["batch"]
            return Response("OK")

        return Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])])


@contextlib.contextmanager
def data_plane(write_key: str = WRITE_KEY) -> Iterator[tuple[str, DataPlane]]:
    plane = DataPlane(write_key)
    with serve(plane.app()) as url:
        yield url, plane
