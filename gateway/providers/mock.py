"""A built-in, fast, deterministic upstream for demos, tests and benchmarks.

The answer is derived from the request (it echoes the last user message), so equal requests get equal answers.
Latency comes from the provider's `latency_ms` (first byte) and `chunk_delay_ms` (between stream chunks).
Faults are chosen by the deployment's model name, so one config can hold healthy and failing deployments:

    <name>-error-<status>    answers that status (429 and 503 carry Retry-After: 1)
    <name>-hang              never answers: the first-byte timeout fires
    <name>-slow-<ms>         answers after <ms> milliseconds
    <name>-reset-<n>         streams <n> chunks, then the connection breaks
    <name>-stall-<n>         streams <n> chunks, then goes silent: the idle timeout fires
    <name>-errorevent-<n>    streams <n> chunks, then an error event inside the 200 stream
    <name>-flaky-<n>         the first <n> calls answer 500, then it is healthy
    <name>-flakyrl-<n>       the first <n> calls answer 429 with Retry-After: 1, then it is healthy
    <name>-refuse            answers 400 content_policy_violation (a refusal on policy grounds)
    <name>-ctx               answers 400 context_length_exceeded
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from gateway.providers.base import sleep_forever
from gateway.reply import Reply

_FAULT = re.compile(r"-(error|hang|slow|reset|stall|errorevent|flaky|flakyrl|refuse|ctx)(?:-(\d+))?$")
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str = ""
    number: int = 0


class MockProvider:
    stream_usage = True

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.latency_s = config.latency_ms / 1000
        self.chunk_delay_s = config.chunk_delay_ms / 1000
        self._faults: dict[str, Fault] = {}
        # Calls by deployment model: the flaky faults count them, and tests read them.
        self.calls: collections.Counter[str] = collections.Counter()
        # How many streams ended because their consumer went away (a client disconnect); tests read it.
        self.cancelled_streams = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def fault(self, model: str) -> Fault:
        fault = self._faults.get(model)
        if fault is None:
            match = _FAULT.search(model)
            fault = Fault(match.group(1), int(match.group(2) or 0)) if match else Fault()
            self._faults[model] = fault
        return fault

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        fault = self.fault(deployment.model)
        self.calls[deployment.model] += 1
        ctx.upstream_start_ns = time.perf_counter_ns()
        delay = fault.number / 1000 if fault.kind == "slow" else self.latency_s
        if fault.kind == "hang" or delay:
            try:
                async with asyncio.timeout(timeouts.first_byte_s):
                    await (sleep_forever() if fault.kind == "hang" else asyncio.sleep(delay))
            except TimeoutError:
                raise UpstreamTimeout(
                    f"The upstream provider {self.name!r} sent no first byte within {timeouts.first_byte_s:g} s.",
                    provider=self.name,
                ) from None
        ctx.upstream_headers_ns = time.perf_counter_ns()
        if fault.kind in ("refuse", "ctx"):
            ctx.upstream_end_ns = ctx.upstream_headers_ns
            refuse = fault.kind == "refuse"
            raise UpstreamRejected(
                "Mock fault: " + ("refused on policy grounds." if refuse else "the prompt is too long."),
                status=400,
                provider=self.name,
                code="content_policy_violation" if refuse else "context_length_exceeded",
            )
        failing = fault.kind in ("flaky", "flakyrl") and self.calls[deployment.model] <= fault.number
        if fault.kind == "error" or failing:
            ctx.upstream_end_ns = ctx.upstream_headers_ns
            status = fault.number or 500
            if failing:
                status = 429 if fault.kind == "flakyrl" else 500
            raise UpstreamRejected(
                f"Mock fault: the upstream answered {status}.",
                status=status,
                provider=self.name,
                retry_after="1" if status in (429, 503) else None,
            )
        model = deployment.model
        if ctx.endpoint == "embeddings":
            body = embeddings(ctx.body, model)
        elif ctx.endpoint == "completions":
            if ctx.stream:
                return Reply(stream=self._stream(ctx, model, fault, completion_chunks(ctx, model)))
            body = completion(ctx, model)
        else:
            if ctx.stream:
                return Reply(stream=self._stream(ctx, model, fault, chat_chunks(ctx, model)))
            body = chat_completion(ctx, model)
        ctx.usage = Usage.from_openai(body["usage"])
        ctx.served_model = model
        ctx.upstream_end_ns = time.perf_counter_ns()
        return Reply(body=orjson.dumps(body), headers=_JSON)

    async def _stream(
        self, ctx: RequestContext, model: str, fault: Fault, chunks: list[dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        ctx.served_model = model
        finished = False
        try:
            for index, chunk in enumerate(chunks):
                if fault.kind in ("reset", "stall", "errorevent") and index == fault.number:
                    if fault.kind == "reset":
                        raise UpstreamUnavailable("Mock fault: connection reset mid-stream.", provider=self.name)
                    if fault.kind == "stall":
                        await sleep_forever()
                    yield orjson.dumps({"error": {"message": "Mock fault: overloaded.", "type": "server_error"}})
                    break
                if index and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield orjson.dumps(chunk)
            else:
                finished = True  # all sent: the consumer may close us at [DONE] without reading past it
                yield b"[DONE]"
            finished = True
        finally:
            ctx.upstream_end_ns = time.perf_counter_ns()
            if not finished:
                self.cancelled_streams += 1


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _prompt_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def answer_words(body: dict[str, Any]) -> tuple[list[str], int]:
    """The answer's pieces (each one token) and the prompt's token count, both derived from the request."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    prompt = " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    last_user = next(
        (_text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
        "",
    )
    words = ["Mock", "answer:", "you", "said"] + (last_user.split()[:32] or ["nothing."])
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0:
        words = words[:limit]
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return pieces, _prompt_tokens(prompt) + 3 * len(messages)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _wants_tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    messages = body.get("messages")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "tool"
    ):
        return None  # the tool has answered: now the model speaks
    tool = tools[0] if isinstance(tools[0], dict) else {}
    function = tool.get("function")
    function = function if isinstance(function, dict) else {}
    return {
        "id": "call_mock_0",
        "type": "function",
        "function": {"name": function.get("name", "tool"), "arguments": "{}"},
    }


def _content(body: dict[str, Any], pieces: list[str]) -> str:
    text = "".join(pieces)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        return orjson.dumps({"answer": text}).decode()
    return text


def chat_completion(ctx: RequestContext, model: str) -> dict[str, Any]:
    pieces, prompt_tokens = answer_words(ctx.body)
    tool_call = _wants_tool_call(ctx.body)
    message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else _content(ctx.body, pieces)}
    if tool_call:
        message["tool_calls"] = [tool_call]
    return {
        "id": f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion",
        "created": int(ctx.started_at),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_call else "stop"}
        ],
        "usage": _usage(prompt_tokens, 8 if tool_call else len(pieces)),
        "system_fingerprint": "fp_mock",
    }


def chat_chunks(ctx: RequestContext, model: str) -> list[dict[str, Any]]:
    pieces, prompt_tokens = answer_words(ctx.body)
    tool_call = _wants_tool_call(ctx.body)
    head = {"id": f"chatcmpl-{ctx.request_id}", "object": "chat.completion.chunk", "created": int(ctx.started_at)}
    head |= {"model": model, "system_fingerprint": "fp_mock"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if tool_call:
        chunks.append(chunk({"tool_calls": [{"index": 0, **tool_call, "function": {**tool_call["function"]}}]}))
        chunks.append(chunk({}, "tool_calls"))
    else:
        text = _content(ctx.body, pieces)
        if text != "".join(pieces):  # JSON mode: the same text, cut into as many pieces
            step = max(1, len(text) // max(1, len(pieces)))
            pieces = [text[i : i + step] for i in range(0, len(text), step)]
        chunks += [chunk({"content": piece}) for piece in pieces]
        chunks.append(chunk({}, "stop"))
    # As an upstream asked for stream_options.include_usage: the relay removes it when the client did not ask.
    chunks.append({**head, "choices": [], "usage": _usage(prompt_tokens, 8 if tool_call else len(pieces))})
    return chunks


def completion(ctx: RequestContext, model: str) -> dict[str, Any]:
    prompt = ctx.body.get("prompt")
    text = prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))
    pieces, _ = answer_words(
        {"messages": [{"role": "user", "content": text}], "max_tokens": ctx.body.get("max_tokens")}
    )
    return {
        "id": f"cmpl-{ctx.request_id}",
        "object": "text_completion",
        "created": int(ctx.started_at),
        "model": model,
        "choices": [{"index": 0, "text": "".join(pieces), "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(_prompt_tokens(text), len(pieces)),
    }


def completion_chunks(ctx: RequestContext, model: str) -> list[dict[str, Any]]:
    whole = completion(ctx, model)
    head = {"id": whole["id"], "object": "text_completion", "created": whole["created"], "model": model}
    pieces = whole["choices"][0]["text"].split(" ")
    texts = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
    chunks: list[dict[str, Any]] = [
        {**head, "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": None}]} for t in texts
    ]
    chunks.append({**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]})
    chunks.append({**head, "choices": [], "usage": whole["usage"]})
    return chunks


MAX_DIMENSIONS = 4096


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text."""
    digest = b""
    counter = 0
    while len(digest) < dimensions * 4:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dimensions}I", digest[: dimensions * 4])]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) if isinstance(x, list) else str(x) for x in inputs]
    requested = body.get("dimensions")
    # Capped like a real model's (text-embedding-3-large has 3,072): a client's 2**63 must not hang the mock.
    dimensions = min(requested, MAX_DIMENSIONS) if isinstance(requested, int) and requested > 0 else 16
    base64_format = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = embed(text, dimensions)
        encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if base64_format else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(_prompt_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
