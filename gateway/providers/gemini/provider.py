"""Google's Gemini API behind the OpenAI format: the upstream call, on HTTPProvider. The pure translations are
beside it: chat requests and whole answers (and the choices made where the APIs differ) in translate.py, with
schema.py, the stream's events in stream.py, embeddings in embeddings.py, errors in errors.py.

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

One upstream client per provider (gateway/providers/http), made at start-up, as for OpenAI.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import orjson

from gateway.config import Deployment, ProviderConfig
from gateway.context import RequestContext, Usage
from gateway.errors import UpstreamRejected
from gateway.providers.base import HTTPProvider, json_answer, translated_stream
from gateway.providers.gemini.embeddings import (
    embed_request,
    embedding_inputs,
    embeddings_of,
    estimate_tokens,
    openai_embeddings,
    vertex_embed_request,
)
from gateway.providers.gemini.errors import malformed, rejected, unreadable_as_malformed
from gateway.providers.gemini.stream import StreamTranslator, event_decoder
from gateway.providers.gemini.translate import prompt_block, to_gemini, to_openai, usage_of
from gateway.providers.http import Response
from gateway.reply import Reply

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_JSON = {"content-type": "application/json"}


def is_vertex(base_url: str) -> bool:
    """A Vertex AI base URL: its host, or a path of Vertex's shape (…/projects/P/locations/L/publishers/google)."""
    parts = urlsplit(base_url)
    return (parts.hostname or "").endswith("aiplatform.googleapis.com") or "/publishers/google" in parts.path


class GeminiProvider(HTTPProvider[list[str] | None]):
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

    # -- HTTPProvider's hooks: the call is the texts of an embeddings request, None for chat ---------------------------

    def request(self, ctx: RequestContext, deployment: Deployment) -> tuple[str, bytes, list[str] | None]:
        if ctx.endpoint == "embeddings":
            texts = embedding_inputs(ctx.body.get("input"))
            dimensions = ctx.body.get("dimensions")
            dimensions = dimensions if isinstance(dimensions, int) else None
            if self.vertex:
                request = vertex_embed_request(texts, dimensions)
                return self.url(deployment.model, "predict"), orjson.dumps(request), texts
            request = embed_request(texts, deployment.model, dimensions)
            return self.url(deployment.model, "batchEmbedContents"), orjson.dumps(request), texts
        if ctx.endpoint != "chat/completions":
            raise UpstreamRejected(
                f"The provider {self.name!r} (Gemini) serves only /v1/chat/completions and /v1/embeddings.",
                status=400,
                provider=self.name,
                code="unsupported_endpoint",
            )
        body = orjson.dumps(to_gemini(ctx.body))
        method = "streamGenerateContent?alt=sse" if ctx.stream else "generateContent"
        return self.url(deployment.model, method), body, None

    def streams(self, ctx: RequestContext, response: Response) -> bool:
        return ctx.endpoint == "chat/completions"  # embeddings are whole, whatever the request says

    def stream(self, ctx: RequestContext, deployment: Deployment, response: Response, call: list[str] | None) -> Reply:
        translator = StreamTranslator(deployment.model, int(ctx.started_at), os.urandom(6).hex())
        stream = translated_stream(self.name, ctx, response, event_decoder(), translator, unreadable_as_malformed)
        return Reply(status=200, stream=stream)

    def answer(
        self, ctx: RequestContext, deployment: Deployment, status: int, content: bytes, call: list[str] | None
    ) -> Reply:
        if call is not None:
            return self._embeddings(ctx, deployment, content, call)
        answer = json_answer(content, self.name)
        block = prompt_block(answer)
        if block is not None:
            raise UpstreamRejected(block, status=400, provider=self.name, code="content_policy_violation")
        if not answer.get("candidates"):
            raise malformed(self.name, "an answer without candidates")
        with unreadable_as_malformed(self.name):
            reply = to_openai(answer, deployment.model, int(ctx.started_at), os.urandom(6).hex())
            if isinstance(answer.get("usageMetadata"), dict):
                ctx.usage = usage_of(answer["usageMetadata"])
        ctx.served_model = str(answer.get("modelVersion") or deployment.model)
        return Reply(status=200, body=orjson.dumps(reply), headers=_JSON)

    @staticmethod
    def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
        return rejected(provider, status, body, retry_after)

    def _embeddings(self, ctx: RequestContext, deployment: Deployment, content: bytes, texts: list[str]) -> Reply:
        answer = json_answer(content, self.name)
        with unreadable_as_malformed(self.name):
            vectors, tokens = embeddings_of(answer)
            if len(vectors) != len(texts):
                raise malformed(self.name, f"{len(vectors)} embeddings for {len(texts)} inputs")
            usage = (
                Usage(prompt_tokens=tokens) if tokens is not None else Usage(estimate_tokens(texts), source="estimate")
            )
            as_base64 = ctx.body.get("encoding_format") == "base64"
            reply = openai_embeddings(vectors, deployment.model, usage.prompt_tokens, as_base64)
        ctx.usage = usage
        ctx.served_model = deployment.model
        return Reply(status=200, body=orjson.dumps(reply), headers=_JSON)
