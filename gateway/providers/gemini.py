"""Google's Gemini API behind the OpenAI format: chat requests, whole answers, streams, embeddings and errors
translated both ways (the pure translations of chat, and the choices made where the APIs differ, are in
gemini_translate.py).

Two kinds of base URL, told apart by `is_vertex`:

- Google AI (the default, https://generativelanguage.googleapis.com/v1beta): `api_key` is sent in the
  `x-goog-api-key` header, never in the query string, where it would land in access logs;
- Vertex AI, a base URL on `*aiplatform.googleapis.com` or whose path has Vertex's `/publishers/google` shape
  (e.g. https://us-central1-aiplatform.googleapis.com/v1/projects/P/locations/L/publishers/google, or a proxy in
  front of it): `api_key` is an OAuth access token, sent as `Authorization: Bearer <token>`. The gateway does not
  mint or refresh tokens (they last an hour): supply one through ${ENV}, or send your own auth through `headers`
  and leave `api_key` empty (Vertex express mode's `x-goog-api-key`, say).

Chat: POST {base}/models/{model}:generateContent, or :streamGenerateContent?alt=sse for a stream, on both.
Embeddings: Google AI's {base}/models/{model}:batchEmbedContents (one call for every input); Vertex AI has no
batchEmbedContents, so there {base}/models/{model}:predict, the text-embedding API, whose token counts are used.
Google AI gives no token count for embeddings: prompt_tokens is then estimated as ceil(characters / 4) per input.

One aiohttp ClientSession per provider, made at start-up, as for OpenAI (see openai.py for why aiohttp).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import math
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.config import Deployment, ProviderConfig, Timeouts
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamRejected, UpstreamUnavailable
from gateway.providers.base import HTTPProvider, end_stream, json_answer, map_transport_errors
from gateway.providers.gemini_translate import (
    UnsupportedRequest,
    content_of,
    finish_reason,
    openai_usage,
    prompt_block,
    to_gemini,
    to_openai,
    usage_of,
)
from gateway.providers.sse import DONE
from gateway.reply import Reply
from gateway.tracecontext import upstream_headers

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_JSON = {"content-type": "application/json"}


def is_vertex(base_url: str) -> bool:
    """A Vertex AI base URL: its host, or a path of Vertex's shape (…/projects/P/locations/L/publishers/google)."""
    parts = urlsplit(base_url)
    return (parts.hostname or "").endswith("aiplatform.googleapis.com") or "/publishers/google" in parts.path


class GeminiProvider(HTTPProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.vertex = is_vertex(self.base_url)
        headers = {"content-type": "application/json", **{k.lower(): v for k, v in config.headers.items()}}
        if config.api_key:  # set last: a stray header of the same name cannot replace the key
            if self.vertex:
                headers["authorization"] = f"Bearer {config.api_key}"
            else:
                headers["x-goog-api-key"] = config.api_key
        self.headers = headers

    def url(self, model: str, method: str) -> str:
        return f"{self.base_url}/models/{model.removeprefix('models/')}:{method}"

    async def send(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        if ctx.endpoint == "embeddings":
            return await self._embed(ctx, deployment, timeouts)
        if ctx.endpoint != "chat/completions":
            raise UpstreamRejected(
                f"The provider {self.name!r} (Gemini) serves only /v1/chat/completions and /v1/embeddings.",
                status=400,
                provider=self.name,
                code="unsupported_endpoint",
            )
        try:
            body = orjson.dumps(to_gemini(ctx.body))
        except UnsupportedRequest as exc:
            raise unsupported(self.name, exc) from None
        method = "streamGenerateContent?alt=sse" if ctx.stream else "generateContent"
        response = await self._post(ctx, self.url(deployment.model, method), body, timeouts)
        token = os.urandom(6).hex()
        if ctx.stream:
            translator = StreamTranslator(deployment.model, int(ctx.started_at), token)
            return Reply(status=200, stream=self._events(ctx, response, translator))
        answer = json_answer(await self._read(ctx, response), self.name)
        block = prompt_block(answer)
        if block is not None:
            raise UpstreamRejected(block, status=400, provider=self.name, code="content_policy_violation")
        if not answer.get("candidates"):
            raise malformed(self.name, "an answer without candidates")
        with unreadable_as_malformed(self.name):
            reply = to_openai(answer, deployment.model, int(ctx.started_at), token)
            if isinstance(answer.get("usageMetadata"), dict):
                ctx.usage = usage_of(answer["usageMetadata"])
        ctx.served_model = str(answer.get("modelVersion") or deployment.model)
        return Reply(status=200, body=orjson.dumps(reply), headers=_JSON)

    async def _post(self, ctx: RequestContext, url: str, body: bytes, timeouts: Timeouts) -> aiohttp.ClientResponse:
        """The upstream's 2xx response, headers read; any other answer raised as the gateway's error."""
        session = self._session
        if session is None:
            raise UpstreamUnavailable(f"The provider {self.name!r} is not open.", provider=self.name)
        ctx.upstream_start_ns = time.perf_counter_ns()
        with map_transport_errors(self.name):
            response = await session.post(
                url, data=body, headers=upstream_headers(self.headers, ctx.trace_id), timeout=self.timeout(timeouts)
            )
            ctx.upstream_headers_ns = time.perf_counter_ns()
            if response.status >= 400:
                content = await response.read()
                response.release()
                ctx.upstream_end_ns = time.perf_counter_ns()
                raise rejected(self.name, response.status, content, response.headers.get("retry-after"))
        return response

    async def _read(self, ctx: RequestContext, response: aiohttp.ClientResponse) -> bytes:
        try:
            with map_transport_errors(self.name):
                return await response.read()
        finally:
            response.release()
            ctx.upstream_end_ns = time.perf_counter_ns()

    async def _events(
        self, ctx: RequestContext, response: aiohttp.ClientResponse, translator: StreamTranslator
    ) -> AsyncIterator[bytes]:
        decoder = EventDecoder()
        finished = False
        try:
            with map_transport_errors(self.name), unreadable_as_malformed(self.name):
                async for chunk in response.content.iter_any():
                    for out in translator.feed_all(decoder.feed(chunk)):
                        yield out
                    if translator.failed:
                        break
                else:
                    for out in translator.feed_all(decoder.flush()):
                        yield out
            if translator.failed:
                return  # the error payload is out: the relay ends the client's stream with it
            # Gemini ends a stream by closing it; only a finishReason tells a whole answer from a cut one.
            if not translator.complete:
                raise UpstreamUnavailable(
                    f"The stream of the upstream provider {self.name!r} ended before a finishReason.",
                    provider=self.name,
                    code="incomplete_stream",
                )
            for out in translator.finish():
                yield out
            if translator.usage is not None:
                ctx.usage = translator.usage
            ctx.served_model = translator.model
            finished = True
            yield DONE
        finally:
            end_stream(ctx, response, finished)

    async def _embed(self, ctx: RequestContext, deployment: Deployment, timeouts: Timeouts) -> Reply:
        try:
            texts = embedding_inputs(ctx.body.get("input"))
        except UnsupportedRequest as exc:
            raise unsupported(self.name, exc) from None
        dimensions = ctx.body.get("dimensions")
        dimensions = dimensions if isinstance(dimensions, int) else None
        if self.vertex:
            url, request = self.url(deployment.model, "predict"), vertex_embed_request(texts, dimensions)
        else:
            url, request = (
                self.url(deployment.model, "batchEmbedContents"),
                embed_request(texts, deployment.model, dimensions),
            )
        response = await self._post(ctx, url, orjson.dumps(request), timeouts)
        content = json_answer(await self._read(ctx, response), self.name)
        with unreadable_as_malformed(self.name):
            vectors, tokens = embeddings_of(content)
            if len(vectors) != len(texts):
                raise malformed(self.name, f"{len(vectors)} embeddings for {len(texts)} inputs")
            usage = (
                Usage(prompt_tokens=tokens) if tokens is not None else Usage(estimate_tokens(texts), source="estimate")
            )
            as_base64 = ctx.body.get("encoding_format") == "base64"
            answer = openai_embeddings(vectors, deployment.model, usage.prompt_tokens, as_base64)
        ctx.usage = usage
        ctx.served_model = deployment.model
        return Reply(status=200, body=orjson.dumps(answer), headers=_JSON)


def unsupported(provider: str, exc: UnsupportedRequest) -> UpstreamRejected:
    return UpstreamRejected(exc.message, status=400, provider=provider, param=exc.param, code="unsupported_parameter")


def malformed(provider: str, what: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"The upstream provider {provider!r} answered with {what}.", provider=provider, code="invalid_upstream_response"
    )


@contextlib.contextmanager
def unreadable_as_malformed(provider: str) -> Iterator[None]:
    """An answer whose fields have types Google never sends is the upstream's fault, a 502: send() raises only
    UpstreamError, and the translations need not check the type of every field they read."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError, struct.error) as exc:
        raise malformed(provider, f"an answer of an unexpected shape ({type(exc).__name__})") from exc


# -- stream ----------------------------------------------------------------------------------------------------------


class EventDecoder:
    """Gemini's SSE `data:` payloads, and the bare JSON error object Google appends, without `data:`, to a stream
    that fails midway (the shared SSEDecoder would skip it as a non-data event)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = (self._buffer + chunk).split(b"\n\n")
        self._buffer = events.pop()
        return [payload for event in events if (payload := _payload(event)) is not None]

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        payload = _payload(rest)
        return [payload] if payload is not None else []


def _payload(event: bytes) -> bytes | None:
    event = event.strip(b"\n")
    if event.startswith(b"data:"):
        lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
        return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)
    stripped = event.strip()
    return stripped if stripped.startswith((b"{", b"[")) else None


class StreamTranslator:
    """GenerateContentResponse events in, OpenAI `chat.completion.chunk` payloads out.

    Each candidate is a choice: a role chunk when it first appears, its text as content deltas, and each function
    call whole, in one tool call delta with its own index. Finish chunks wait for the end of the stream: older
    models repeat finishReason on every event. Then a usage chunk from the last usageMetadata, always, as an
    upstream asked for stream_options.include_usage: the relay strips it when the client did not ask.
    """

    __slots__ = ("model", "usage", "failed", "_created", "_token", "_head", "_finish", "_tools", "_counter")

    def __init__(self, model: str, created: int, token: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.failed = False
        self._created = created
        self._token = token
        self._head = b""
        self._finish: dict[int, Any] = {}  # choice index -> the latest finishReason
        self._tools: dict[int, int] = {}  # choice index -> tool calls so far; a key once the choice has begun
        self._counter = itertools.count()

    @property
    def complete(self) -> bool:
        return bool(self._finish)

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._head + orjson.dumps({"index": index, "delta": delta, "finish_reason": finish}) + b"]}"

    def feed_all(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in payloads:
            out += self.feed(payload)
            if self.failed:
                break
        return out

    def feed(self, payload: bytes) -> list[bytes]:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if isinstance(event, list) and event:  # an error object wrapped in an array, as Google sometimes does
            event = event[0]
        if not isinstance(event, dict):
            return []
        if "error" in event:
            self.failed = True
            _, info, _ = openai_error(event["error"], 502)
            return [orjson.dumps({"error": info})]
        if not self._head:
            self._start(event)
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = usage_of(event["usageMetadata"])
        block = prompt_block(event)
        if block is not None:
            self.failed = True
            info = {
                "message": block,
                "type": "invalid_request_error",
                "param": None,
                "code": "content_policy_violation",
            }
            return [orjson.dumps({"error": info})]
        out: list[bytes] = []
        for position, candidate in enumerate(event.get("candidates") or []):
            if isinstance(candidate, dict):
                out += self._candidate(candidate, position)
        return out

    def _start(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("modelVersion"), str) and event["modelVersion"]:
            self.model = event["modelVersion"]
        answer_id = event.get("responseId") or f"chatcmpl-{self._token}"
        head = {"id": answer_id, "object": "chat.completion.chunk", "created": self._created, "model": self.model}
        # Every chunk starts alike: serialise that once, then only each choice per event.
        self._head = orjson.dumps(head)[:-1] + b',"choices":['

    def _candidate(self, candidate: dict[str, Any], position: int) -> list[bytes]:
        index = candidate.get("index", position)
        index = index if isinstance(index, int) else position
        out: list[bytes] = []
        if index not in self._tools:
            self._tools[index] = 0
            out.append(self._delta(index, {"role": "assistant", "content": ""}))
        text, calls = content_of(candidate, f"call_{self._token}_", self._counter)
        if text:
            out.append(self._delta(index, {"content": text}))
        if calls:
            for call in calls:
                call["index"] = self._tools[index]
                self._tools[index] += 1
            out.append(self._delta(index, {"tool_calls": calls}))
        if candidate.get("finishReason"):
            self._finish[index] = candidate["finishReason"]
        return out

    def finish(self) -> list[bytes]:
        """The finish chunk of every choice, then the usage chunk (when Gemini sent usage)."""
        out = [
            self._delta(i, {}, finish_reason(reason, self._tools.get(i, 0) > 0)) for i, reason in self._finish.items()
        ]
        if self.usage is not None:
            out.append(self._head + b'],"usage":' + orjson.dumps(openai_usage(self.usage)) + b"}")
        return out


# -- embeddings ------------------------------------------------------------------------------------------------------


def embedding_inputs(value: Any) -> list[str]:
    """OpenAI's input as texts; token arrays cannot be sent to Gemini, which takes text only."""
    inputs = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if not all(isinstance(item, str) for item in inputs):
        raise UnsupportedRequest("Only text inputs are supported by this model's provider, not token arrays.", "input")
    return inputs


def embed_request(texts: list[str], model: str, dimensions: int | None) -> dict[str, Any]:
    name = model if model.startswith("models/") else f"models/{model}"
    requests = []
    for text in texts:
        request: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    return {"requests": requests}


def vertex_embed_request(texts: list[str], dimensions: int | None) -> dict[str, Any]:
    request: dict[str, Any] = {"instances": [{"content": text} for text in texts]}
    if dimensions is not None:
        request["parameters"] = {"outputDimensionality": dimensions}
    return request


def embeddings_of(answer: dict[str, Any]) -> tuple[list[list[float]], int | None]:
    """The vectors of a batchEmbedContents or predict answer, and its token count when it gives one."""
    predictions = answer.get("predictions")
    if isinstance(predictions, list):  # Vertex AI: each embedding has its statistics
        found = [p.get("embeddings") if isinstance(p, dict) else None for p in predictions]
        embeddings = [e if isinstance(e, dict) else {} for e in found]
        counts = [e.get("statistics", {}).get("token_count") or 0 for e in embeddings]
        return [list(e.get("values") or []) for e in embeddings], sum(int(c) for c in counts)
    listed = answer.get("embeddings")
    vectors = [list(e.get("values") or []) if isinstance(e, dict) else [] for e in listed or []]
    metadata = answer.get("usageMetadata")
    count = metadata.get("promptTokenCount") if isinstance(metadata, dict) else None
    return vectors, count if isinstance(count, int) else None


def estimate_tokens(texts: list[str]) -> int:
    # About four characters a token in English, the rule of thumb OpenAI and Google both give.
    return sum(math.ceil(len(text) / 4) for text in texts)


def openai_embeddings(vectors: list[list[float]], model: str, tokens: int, as_base64: bool) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(vectors):
        # base64 is what the openai SDK asks for by default: little-endian float32s, as OpenAI sends them
        embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


# -- errors ----------------------------------------------------------------------------------------------------------

# "The input token count (N) exceeds the maximum number of tokens allowed (M)." (Google AI), "...the input token
# count is N but model only supports up to M." (Vertex AI)
_CONTEXT_LENGTH = re.compile(r"input token count.*(exceeds|only supports up to)", re.IGNORECASE | re.DOTALL)


def openai_error(error: Any, status: int) -> tuple[int, dict[str, Any], str | None]:
    """Google's error object ({code, message, status, details}) as (HTTP status, OpenAI's error object, the
    Retry-After that Google's RetryInfo asks for)."""
    info = error if isinstance(error, dict) else {}
    message = str(info.get("message") or "")  # never `details`: its DebugInfo may quote the key
    kind = info.get("status")
    details = [d for d in info.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details}
    error_type: str | None = None
    code: str | None = None
    param: str | None = None
    if _CONTEXT_LENGTH.search(message):
        code, param = "context_length_exceeded", "messages"
    elif kind == "RESOURCE_EXHAUSTED":
        status, error_type, code = 429, "rate_limit_error", "rate_limit_exceeded"
    elif "API_KEY_INVALID" in reasons or kind == "UNAUTHENTICATED":
        # Google answers a bad key with 400: say 401, as an OpenAI upstream would, so that it reads as what it is.
        status, error_type, code = 401, "authentication_error", "invalid_api_key"
    elif kind == "PERMISSION_DENIED":
        error_type = "permission_error"
    elif kind == "NOT_FOUND" and "models/" in message:
        code, param = "model_not_found", "model"
    if error_type is None:
        error_type = "invalid_request_error" if 400 <= status < 500 else "api_error"
    retry_after = next((_seconds(d.get("retryDelay")) for d in details if "retryDelay" in d), None)
    return status, {"message": message, "type": error_type, "param": param, "code": code}, retry_after


def _seconds(delay: Any) -> str | None:
    """A google.protobuf.Duration in JSON ("37s", "0.5s") as Retry-After's whole seconds."""
    if not isinstance(delay, str) or not delay.endswith("s"):
        return None
    try:
        return str(max(1, math.ceil(float(delay[:-1]))))
    except ValueError:
        return None


def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
    """A Gemini error answer as the gateway's error, its status and Google's message kept."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:  # streamGenerateContent wraps its errors in an array
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        # Not Google's JSON (a proxy's HTML page, say): the status alone speaks.
        message = f"The upstream provider {provider!r} answered {status}."
        return UpstreamRejected(message, status=status, provider=provider, retry_after=retry_after)
    status, info, google_retry_after = openai_error(error, status)
    return UpstreamRejected(
        info["message"] or f"The upstream provider {provider!r} answered {status}.",
        status=status,
        provider=provider,
        error_type=info["type"],
        code=info["code"],
        param=info["param"],
        retry_after=retry_after or google_retry_after,
    )
