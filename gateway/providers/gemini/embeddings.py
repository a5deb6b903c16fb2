"""OpenAI's embeddings request and answer as Gemini's: Google AI's batchEmbedContents, Vertex AI's predict."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from gateway.providers.base import UnsupportedRequest


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
