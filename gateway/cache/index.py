"""The semantic index as the cache uses it: the shape agreed with gateway/cache/semantic.py (SemanticIndex, which
implements it), so that this side is built and tested against any index of that shape."""

from __future__ import annotations

from typing import Protocol


class Match(Protocol):
    @property
    def key(self) -> str:
        """The exact key whose entry holds the answer to serve."""
        ...

    @property
    def score(self) -> float: ...


class SemanticLookup(Protocol):
    async def lookup(self, project: str, scope: str, text: str, min_score: float) -> Match | None:
        """The best earlier turn of this scope whose text means the same at min_score or above (false hits
        vetoed by the index itself); None when there is none."""
        ...

    async def add(self, project: str, scope: str, text: str, key: str, ttl_s: float) -> None: ...

    async def purge(self, project: str, scope: str | None = None) -> int: ...

    async def close(self) -> None: ...

    def health(self) -> str:
        """ "" while the index works as configured, else why not (for /health/ready)."""
        ...
