"""Prompt similarity, off the request path: how often a project sends the same prompt, or nearly the same, again.

The request path only `offer()`s an item (request id, time, project, model, the prompt's text): an append to a
bounded deque that never blocks; a full queue drops the item and counts it. A background loop takes batches,
embeds each batch in one call (the built-in LocalEmbedding, or an embeddings deployment through `embed`), and
compares every prompt with the project's recent prompts: a ring buffer of `window` unit rows (float32) per
project, for at most `max_projects` projects (the least recently seen is forgotten first). Each prompt gets its
top-k nearest earlier prompts of the same project with their cosine scores, a near-duplicate flag (score >=
`near_duplicate_threshold`) and an exact-duplicate flag (the sha256 of its normalised text is among the project's
recent prompts), and becomes one row of prompt_similarity_logs (`store.write_similarity`). `similarity_stats` on
the store then says what an exact or a semantic cache would have served.

A prompt of one batch is compared with the window as it was before the batch and with the earlier prompts of the
same batch; so for one batch the window holds up to `window + batch_size` rows. Writes are best effort: a batch
the store refuses is logged, counted and dropped, never retried (the request records are what must not be lost).
Memory: `window * dim * 4` bytes per project at most (2,000 x 512 x 4 = 4 MB); a project's matrix grows as its
prompts arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter

from gateway.tasks import cancel, spawn, wait_for_wakeup
from gateway.telemetry.embedding import LocalEmbedding

__all__ = [
    "EmbedFn",
    "SimilarityItem",
    "SimilarityStore",
    "SimilarityWorker",
    "normalise",
    "prompt_hash",
    "prompt_text",
]

logger = logging.getLogger("gateway.telemetry")

F32 = npt.NDArray[np.float32]
Row = dict[str, Any]
EmbedFn = Callable[[list[str]], Awaitable[npt.NDArray[Any]]]


class SimilarityStore(Protocol):
    async def write_similarity(self, rows: Sequence[Row]) -> None: ...


@dataclass(frozen=True, slots=True)
class SimilarityItem:
    id: str  # the request id
    ts: float  # epoch seconds
    project: str
    model: str
    text: str  # what the user sent: see prompt_text()


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def prompt_text(endpoint: str, body: dict[str, Any], max_chars: int = 4000) -> str:
    """What the user sent, at most max_chars characters: the user messages' text joined by newlines (chat), the
    prompt (completions; the text ones of a list), the input (embeddings, responses); "" if there is none."""
    parts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    else:
        source = body.get("prompt") if endpoint.endswith("completions") else body.get("input", body.get("prompt"))
        if isinstance(source, str):
            parts = [source]
        elif isinstance(source, list):
            parts = [
                p if isinstance(p, str) else _content_text(p.get("content")) if isinstance(p, dict) else ""
                for p in source
            ]
    text = "\n".join(p for p in parts if p)
    return text[:max_chars]


def normalise(text: str) -> str:
    """NFKC, lower case, runs of white space as one space, trimmed: what "the same prompt" means."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def prompt_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class _Window:
    """One project's recent prompts: a ring of unit rows, their request ids, and a count of their hashes."""

    __slots__ = ("capacity", "hash_counts", "hashes", "ids", "next", "size", "vectors")

    def __init__(self, capacity: int, dim: int) -> None:
        self.capacity = capacity
        self.vectors: F32 = np.zeros((min(capacity, 64), dim), dtype=np.float32)  # grows by doubling
        self.ids: list[str] = []
        self.hashes: list[str] = []
        self.hash_counts: dict[str, int] = {}
        self.size = 0
        self.next = 0  # the slot the next row replaces, once full

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def add(self, vector: F32, request_id: str, digest: str) -> None:
        if self.size < self.capacity:
            if self.size == len(self.vectors):
                grown = np.zeros((min(self.capacity, 2 * len(self.vectors)), self.dim), dtype=np.float32)
                grown[: self.size] = self.vectors
                self.vectors = grown
            slot = self.size
            self.size += 1
            self.ids.append(request_id)
            self.hashes.append(digest)
        else:
            slot = self.next
            self.next = (slot + 1) % self.capacity
            old = self.hashes[slot]
            if self.hash_counts[old] == 1:
                del self.hash_counts[old]
            else:
                self.hash_counts[old] -= 1
            self.ids[slot] = request_id
            self.hashes[slot] = digest
        self.vectors[slot] = vector
        self.hash_counts[digest] = self.hash_counts.get(digest, 0) + 1


class SimilarityWorker:
    """Compares each offered prompt with its project's recent ones in the background; writes one row per prompt.

    embed: an async function from texts to an (n, d) matrix (an embeddings deployment); None uses LocalEmbedding.
    Batches of at least `thread_min_batch` prompts are embedded and compared in a thread (asyncio.to_thread).
    """

    def __init__(
        self,
        *,
        store: SimilarityStore | None,
        registry: CollectorRegistry | None = None,
        embed: EmbedFn | None = None,
        embedding: LocalEmbedding | None = None,
        window: int = 2000,
        k: int = 5,
        near_duplicate_threshold: float = 0.92,
        max_projects: int = 32,
        queue_size: int = 10_000,
        batch_size: int = 256,
        max_chars: int = 4000,
        flush_interval_s: float = 1.0,
        thread_min_batch: int = 16,
        cache_size: int = 4096,
    ) -> None:
        if window < 1 or k < 1 or max_projects < 1 or queue_size < 1 or batch_size < 1:
            raise ValueError("window, k, max_projects, queue_size and batch_size must be at least 1")
        self.store = store
        self.embed_fn = embed
        self.embedding = embedding or LocalEmbedding()
        self.window = window
        self.k = k
        self.near_duplicate_threshold = near_duplicate_threshold
        self.max_projects = max_projects
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.flush_interval_s = flush_interval_s
        self.thread_min_batch = thread_min_batch
        self._items: deque[SimilarityItem] = deque()
        self._projects: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()  # the windows change in a thread (big batches) and are read by nearest()
        self.cache_size = cache_size
        self._vectors: OrderedDict[str, F32] = OrderedDict()  # recent prompts' vectors, by prompt_hash
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._closing = False
        self.dropped = 0
        self.processed = 0
        r = registry if registry is not None else CollectorRegistry()
        self.m_processed = Counter("gateway_similarity_processed", "Prompts compared with recent ones.", registry=r)
        self.m_dropped = Counter(
            "gateway_similarity_dropped",
            "Prompts not compared: queue full or embedding failed.",
            ["reason"],
            registry=r,
        )
        self.m_near = Counter("gateway_similarity_near_duplicates", "Prompts close to a recent one.", registry=r)
        self.m_exact = Counter("gateway_similarity_exact_duplicates", "Prompts equal to a recent one.", registry=r)
        self.m_write_errors = Counter(
            "gateway_similarity_write_errors", "Batches of similarity rows the store refused.", registry=r
        )

    # -- the request path -------------------------------------------------------------------------------------

    def offer(self, item: SimilarityItem) -> bool:
        """Never blocks, never raises. False when the item was dropped (queue full) or has no text."""
        if not item.text:
            return False
        if len(self._items) >= self.queue_size:
            self.dropped += 1
            self.m_dropped.labels("queue_full").inc()
            return False
        if len(item.text) > self.max_chars:
            item = SimilarityItem(item.id, item.ts, item.project, item.model, item.text[: self.max_chars])
        self._items.append(item)
        if len(self._items) >= self.batch_size:
            self._wakeup.set()
        return True

    def __len__(self) -> int:
        return len(self._items)

    # -- the background loop ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = spawn(self._run(), name="prompt-similarity")

    async def _run(self) -> None:
        while True:
            await wait_for_wakeup(self._wakeup, self.flush_interval_s)
            await self.flush()
            if self._closing:
                return

    async def flush(self) -> int:
        """Process everything queued now, batch by batch; the number of prompts compared."""
        done = 0
        while self._items:
            batch = [self._items.popleft() for _ in range(min(self.batch_size, len(self._items)))]
            rows = await self.process(batch)
            done += len(rows)
            if rows and self.store is not None:
                try:
                    await self.store.write_similarity(rows)
                except Exception as exc:  # noqa: BLE001 - best effort: the batch is dropped, never retried
                    self.m_write_errors.inc()
                    logger.warning("prompt similarity: %d rows not written: %s", len(rows), exc)
        return done

    async def close(self, deadline_s: float = 5.0) -> None:
        """Let the loop process what is queued and stop, until the deadline; then cancel it. The loop is never
        cancelled in the middle of a batch otherwise (a batch in a thread would go on beside the next one)."""
        self._closing = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is None:
            task = spawn(self.flush(), name="prompt-similarity-close")
        try:
            async with asyncio.timeout(deadline_s):
                await asyncio.shield(task)
        except TimeoutError:
            await cancel(task)
        if self._items:
            logger.warning("prompt similarity: %d prompts left unprocessed at shutdown", len(self._items))

    async def process(self, batch: list[SimilarityItem]) -> list[Row]:
        """Embed and compare one batch (updating the windows); its rows. An embedding failure drops the batch.

        A prompt seen lately (same normalised text) is not embedded again: repeated prompts are common, and they
        are exactly what this report is about."""
        if not batch:
            return []
        digests = [prompt_hash(item.text) for item in batch]
        known: dict[str, F32] = {}
        for digest in set(digests):
            if digest in self._vectors:
                known[digest] = self._vectors[digest]
                self._vectors.move_to_end(digest)
        missing = [d for d in dict.fromkeys(digests) if d not in known]
        texts = {d: item.text for d, item in zip(digests, batch, strict=True) if d not in known}
        big = len(missing) >= self.thread_min_batch
        if missing and self.embed_fn is not None:
            try:
                found = await self.embed_fn([texts[d] for d in missing])
                fresh = _unit_rows(np.asarray(found, dtype=np.float32), len(missing))
            except Exception as exc:  # noqa: BLE001 - any failure of the deployment drops this batch only
                self.m_dropped.labels("embed_error").inc(len(batch))
                self.dropped += len(batch)
                logger.warning("prompt similarity: embedding %d prompts failed: %s", len(batch), exc)
                return []
            self._remember(missing, fresh, known)
        elif missing:
            embed = self.embedding.embed
            todo = [texts[d] for d in missing]
            fresh = await asyncio.to_thread(embed, todo) if big else embed(todo)
            self._remember(missing, fresh, known)
        vectors = np.stack([known[d] for d in digests])
        big = len(batch) >= self.thread_min_batch
        rows = (
            await asyncio.to_thread(self._compare, batch, vectors, digests)
            if big
            else self._compare(batch, vectors, digests)
        )
        self.processed += len(rows)
        self.m_processed.inc(len(rows))
        self.m_near.inc(sum(1 for r in rows if r["near_duplicate"]))
        self.m_exact.inc(sum(1 for r in rows if r["exact_duplicate"]))
        return rows

    def _remember(self, digests: list[str], vectors: F32, known: dict[str, F32]) -> None:
        cache = self._vectors
        for digest, vector in zip(digests, vectors, strict=True):
            cache[digest] = known[digest] = vector
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    async def nearest(self, project: str, text: str, k: int = 50, min_score: float = 0.5) -> list[tuple[str, float]]:
        """The recent prompts of a project most like `text`: (request id, cosine), best first. For the query API's
        similar_to filter; it sees what the window holds (the last `window` prompts of the project)."""
        win = self._projects.get(project)
        if win is None or not win.size or not text:
            return []
        text = text[: self.max_chars]
        if self.embed_fn is not None:
            vector = _unit_rows(np.asarray(await self.embed_fn([text]), dtype=np.float32), 1)[0]
        else:
            vector = self.embedding.embed([text])[0]
        # In a thread: the lock may be held by a batch being compared there, and the window must not move while
        # its scores are matched with its ids.
        return await asyncio.to_thread(self._nearest, win, vector, k, min_score)

    def _nearest(self, win: _Window, vector: F32, k: int, min_score: float) -> list[tuple[str, float]]:
        with self._lock:
            if vector.shape[0] != win.dim:
                return []
            size = win.size
            scores = win.vectors[:size] @ vector
            ids = win.ids[:size]
        order = np.argsort(-scores, kind="stable")[:k]
        return [(ids[p], round(float(scores[p]), 4)) for p in order if scores[p] >= min_score]

    # -- the comparison (runs in a thread for big batches: only one batch is ever in progress) -----------------

    def _project(self, project: str, dim: int) -> _Window:
        win = self._projects.get(project)
        if win is None or win.dim != dim:  # a new project, or an embedding of another size: start afresh
            win = self._projects[project] = _Window(self.window, dim)
        self._projects.move_to_end(project)
        while len(self._projects) > self.max_projects:
            self._projects.popitem(last=False)
        return win

    def _compare(self, batch: list[SimilarityItem], vectors: F32, digests: list[str]) -> list[Row]:
        with self._lock:
            return self._compare_locked(batch, vectors, digests)

    def _compare_locked(self, batch: list[SimilarityItem], vectors: F32, digests: list[str]) -> list[Row]:
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault(item.project, []).append(i)
        rows: list[Row | None] = [None] * len(batch)
        for project, positions in groups.items():
            win = self._project(project, int(vectors.shape[1]))
            sub = vectors[positions]
            # Each prompt against the window as it was before the batch and the batch's own earlier prompts: one
            # matrix product for the whole batch, later prompts of the batch masked out.
            old_ids = list(win.ids)
            old_slots = win.size
            candidates = np.concatenate((win.vectors[:old_slots], sub)) if old_slots else sub
            sims = sub @ candidates.T
            n = len(positions)
            later = np.triu(np.ones((n, n), dtype=bool))
            sims[:, old_slots:][later] = -2.0  # below any cosine
            ids = old_ids + [batch[i].id for i in positions]
            tops = self._top_k(sims)
            for j, i in enumerate(positions):
                item = batch[i]
                top = tops[j]
                matches = [{"id": ids[p], "score": score} for p, score in top]
                digest = digests[i]
                score = top[0][1] if top else 0.0
                rows[i] = {
                    "id": item.id,
                    "ts": item.ts,
                    "project": item.project,
                    "model": item.model,
                    "prompt_hash": digest,
                    "nearest_id": ids[top[0][0]] if top else None,
                    "score": score,
                    "matches": matches,
                    "near_duplicate": score >= self.near_duplicate_threshold,
                    "exact_duplicate": digest in win.hash_counts,
                }
                win.add(sub[j], item.id, digest)
        return [row for row in rows if row is not None]

    def _top_k(self, sims: F32) -> list[list[tuple[int, float]]]:
        """Per row: the positions and scores of its k best positive scores, best first (all rows at once; `sims` is
        overwritten). k passes of argmax rather than argpartition, which crawls on rows of many equal scores: a
        batch of repeated prompts, the very case this report is for."""
        n, width = sims.shape
        rows = np.arange(n)
        picks, scores = [], []
        for _ in range(min(self.k, width)):
            best = sims.argmax(axis=1)
            picks.append(best)
            scores.append(sims[rows, best])
            sims[rows, best] = -3.0  # below any cosine and the mask
        if not picks:
            return [[] for _ in range(n)]
        by_row = zip(np.stack(picks, axis=1).tolist(), np.stack(scores, axis=1).tolist(), strict=True)
        return [
            [(p, round(min(1.0, s), 4)) for p, s in zip(row_picks, row_scores, strict=True) if s > 0.0]
            for row_picks, row_scores in by_row
        ]


def _unit_rows(x: npt.NDArray[np.float32], n: int) -> F32:
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"the embedding function returned shape {x.shape} for {n} texts")
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
    unit: F32 = (x / norms).astype(np.float32)
    return unit
