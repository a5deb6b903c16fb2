"""How the semantic cache turns a last user turn into a vector: the gateway's local embedding (hashed n-grams,
gateway/similarity/embedding.py) of the turn stripped of what a rewording changes and a question does not, or an
embedding deployment of the config through a callable the caller hands in.

The local embedding sees shared words and character n-grams, so it embeds the turn as semantic_text.py
normalizes it: what separates two wordings of one question (courtesy, contractions, function words) taken out.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.cache.semantic_text import normalize_turn
from gateway.similarity.embedding import LocalEmbedding
from gateway.similarity.worker import EmbedFn

__all__ = ["DeploymentEmbedder", "EmbedFn", "Embedder", "LocalTurnEmbedder"]

F32 = npt.NDArray[np.float32]


class Embedder(Protocol):
    name: str  # kept with the vectors in Redis: replicas with another embedding do not read them

    async def embed(self, text: str) -> F32:
        """One turn's vector, unit norm (zeros when it has nothing to embed)."""
        ...


class LocalTurnEmbedder:
    """The built-in embedding of the normalized turn: no network, tens of microseconds."""

    def __init__(self, dim: int = 512) -> None:
        self._local = LocalEmbedding(dim)
        self.name = f"local-{dim}"

    def embed_now(self, text: str, normalized: str | None = None) -> F32:
        """`normalized`: normalize_turn(text), when the caller has it already."""
        return self._local.embed_one(normalize_turn(text) if normalized is None else normalized)

    async def embed(self, text: str) -> F32:
        return self.embed_now(text)


class DeploymentEmbedder:
    """An embedding deployment of the config, through `fn`; its rows are normalized to unit length here."""

    def __init__(self, fn: EmbedFn, name: str) -> None:
        self._fn = fn
        self.name = f"model-{name}"

    async def embed(self, text: str) -> F32:
        row = np.asarray((await self._fn([text]))[0], dtype=np.float32)
        norm = float(np.linalg.norm(row))
        return row / norm if norm > 0 else row
