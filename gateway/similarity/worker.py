"""Prompt similarity, off the request path: how often a project sends the same prompt, or nearly the same, again.

The request path only `offer()`s an item (request id, time, project, model, the prompt's text): an append to a
bounded deque that never blocks; a full queue drops the item and counts it. A background loop takes batches,
embeds each batch in one call (the built-in LocalEmbedding, or an embeddings deployment through `embed`), and
compares every prompt with the project's recent prompts. A project's window holds its last `window` DISTINCT
prompts (by the sha256 of the normalised text): one unit row (float32) each, with the ids of its most recent
requests (at most RECENT_IDS); when it is full, the prompt seen least recently goes (a repeat keeps its prompt in).
Distinct, because real traffic repeats prompts exactly very often (templates, retries): a repeat costs no row of
the window and no row of the matrix product, does not push other prompts out, and its nearest matches are other
prompts rather than k copies of itself. At most `max_projects` projects have a window (the least recently seen is
forgotten first). Each prompt gets its top-k nearest earlier prompts of the same project (each as its most recent
request) with their cosine scores, a near-duplicate flag (score >= `near_duplicate_threshold`) and an
exact-duplicate flag (its normalised text is in the window, or earlier in the batch); an exact repeat's nearest is
the latest earlier request of that prompt, with score 1.0. Each prompt becomes one row of prompt_similarity_logs
(`store.write_similarity`). `similarity_stats` on the store then says what an exact or a semantic cache would have
served.

A batch is compared per project in one matrix product: its distinct prompts against the window as it was before
the batch and the batch's earlier distinct prompts; so for one batch the comparison has up to `window` + (the
batch's distinct prompts) columns. Writes are best effort: a batch the store refuses is logged, counted and
dropped, never retried (the request records are what must not be lost). Memory per project at most: `window * dim
* 4` bytes of rows (2,000 x 512 x 4 = 4 MB) and `window * RECENT_IDS` request ids; its matrix grows as its prompts
arrive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter

from gateway.similarity.embedding import LocalEmbedding
from gateway.similarity.prompt import SimilarityItem, normalise, prompt_hash, prompt_text
from gateway.tasks import cancel, spawn, wait_for_wakeup

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


# How many recent request ids the window keeps per distinct prompt: what nearest() (the traces API's similar_to) can
# list of one prompt repeated many times.
RECENT_IDS = 32


class _Window:
    """One project's recent DISTINCT prompts: a unit row each, and the ids of its most recent requests (newest last).

    `slots` maps a prompt's digest to its row, least recently seen first: a repeat moves it to the end, and a full
    window reuses the row of the first one (O(1) per prompt). Rows are never freed, so rows [0, size) are all in use.
    """

    __slots__ = ("capacity", "recent", "slots", "vectors")

    def __init__(self, capacity: int, dim: int) -> None:
        self.capacity = capacity
        self.vectors: F32 = np.zeros((min(capacity, 64), dim), dtype=np.float32)  # grows by doubling
        self.slots: OrderedDict[str, int] = OrderedDict()
        self.recent: list[deque[str]] = []  # by row

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def size(self) -> int:
        return len(self.recent)

    def newest(self) -> list[str]:
        """Each row's most recent request id."""
        return [ids[-1] for ids in self.recent]

    def seen(self, digest: str, request_ids: list[str]) -> bool:
        """A prompt of the window seen again: its new requests are recorded and it becomes the most recent.
        False if the prompt is not in the window."""
        slot = self.slots.get(digest)
        if slot is None:
            return False
        self.recent[slot].extend(request_ids)
        self.slots.move_to_end(digest)
        return True

    def place(self, digest: str, request_ids: list[str]) -> int:
        """A row for a new prompt (the least recently seen prompt's when full); the caller writes its vector."""
        recent = deque(request_ids, maxlen=RECENT_IDS)
        if len(self.recent) < self.capacity:
            slot = len(self.recent)
            self.recent.append(recent)
        else:
            _, slot = self.slots.popitem(last=False)
            self.recent[slot] = recent
        self.slots[digest] = slot
        return slot

    def write(self, slots: list[int], vectors: F32) -> None:
        """The vectors of rows `place()` gave out, in one assignment (slots distinct)."""
        if not slots:
            return
        rows = len(self.vectors)
        need = max(slots) + 1
        if need > rows:
            grown_rows = rows
            while grown_rows < need:
                grown_rows *= 2
            grown = np.zeros((min(self.capacity, grown_rows), self.dim), dtype=np.float32)
            grown[:rows] = self.vectors
            self.vectors = grown
        self.vectors[slots] = vectors


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
        # Hashed once per distinct text: repeats are the common case here.
        hashes = {text: prompt_hash(text) for text in {item.text for item in batch}}
        digests = [hashes[item.text] for item in batch]
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
        big = len(batch) >= self.thread_min_batch
        rows = (
            await asyncio.to_thread(self._compare, batch, known, digests)
            if big
            else self._compare(batch, known, digests)
        )
        self.processed += len(rows)
        self.m_processed.inc(len(rows))
        self.m_near.inc(sum(1 for r in rows if r["near_duplicate"]))
        self.m_exact.inc(sum(1 for r in rows if r["exact_duplicate"]))
        return rows

    def _remember(self, digests: list[str], vectors: F32, known: dict[str, F32]) -> None:
        cache = self._vectors
        for digest, vector in zip(digests, vectors, strict=True):
            # A copy of the row: a row of the batch's matrix is a view that keeps the whole matrix alive, and the
            # cache's bound of cache_size rows held up to that many batches (256 rows of 2 KB each).
            cache[digest] = known[digest] = vector.copy()
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    async def nearest(self, project: str, text: str, k: int = 50, min_score: float = 0.5) -> list[tuple[str, float]]:
        """The recent requests of a project whose prompts are most like `text`: (request id, cosine), best first,
        at most k. For the query API's similar_to filter; it sees what the window holds (the last `window` distinct
        prompts of the project, each with its last RECENT_IDS requests, newest first, all with the prompt's score)."""
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
            scores = win.vectors[: win.size] @ vector
            # Each prompt has at least one request: k prompts are enough. Their ids are copied under the lock.
            order = np.argsort(-scores, kind="stable")[:k].tolist()
            recent = [list(win.recent[slot]) for slot in order]
        found: list[tuple[str, float]] = []
        for slot, request_ids in zip(order, recent, strict=True):
            score = float(scores[slot])
            if score < min_score:
                break
            found.extend((request_id, round(score, 4)) for request_id in reversed(request_ids))
            if len(found) >= k:
                break
        return found[:k]

    # -- the comparison (runs in a thread for big batches: only one batch is ever in progress) -----------------

    def _project(self, project: str, dim: int) -> _Window:
        win = self._projects.get(project)
        if win is None or win.dim != dim:  # a new project, or an embedding of another size: start afresh
            win = self._projects[project] = _Window(self.window, dim)
        self._projects.move_to_end(project)
        while len(self._projects) > self.max_projects:
            self._projects.popitem(last=False)
        return win

    def _compare(self, batch: list[SimilarityItem], known: dict[str, F32], digests: list[str]) -> list[Row]:
        with self._lock:
            return self._compare_locked(batch, known, digests)

    def _compare_locked(self, batch: list[SimilarityItem], known: dict[str, F32], digests: list[str]) -> list[Row]:
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault(item.project, []).append(i)
        dim = int(next(iter(known.values())).shape[0])
        rows: list[Row | None] = [None] * len(batch)
        for project, positions in groups.items():
            self._compare_project(self._project(project, dim), batch, positions, known, digests, rows)
        return [row for row in rows if row is not None]

    def _compare_project(
        self,
        win: _Window,
        batch: list[SimilarityItem],
        positions: list[int],
        known: dict[str, F32],
        digests: list[str],
        rows: list[Row | None],
    ) -> None:
        """The rows of one project's prompts of the batch (at `positions`), then the window updated with them.

        The matrix product is of the batch's distinct prompts only (u, in order of first appearance) against the
        window's rows and then the batch's distinct prompts; column c of it is "the prompt of column c", whose id
        as a match is its most recent request so far (`latest`, updated item by item). A repeat within the batch
        reuses its prompt's top k: a prompt first seen between the two occurrences is not among its other matches
        (its nearest, score and flags are exact; computing more would cost the product this is here to save)."""
        uniq = list(dict.fromkeys(digests[i] for i in positions))
        vectors = np.stack([known[d] for d in uniq])
        columns, tops = self._distinct_top_k(win, uniq, vectors)
        in_window = [c < win.size for c in columns]
        latest = win.newest() + [""] * len(uniq)  # "" until the batch prompt of that column is reached
        index = {d: u for u, d in enumerate(uniq)}
        request_ids: list[list[str]] = [[] for _ in uniq]
        last: dict[int, int] = {}  # u -> its last position among the project's items
        k, threshold = self.k, self.near_duplicate_threshold
        for n, i in enumerate(positions):
            item = batch[i]
            digest = digests[i]
            u = index[digest]
            column = columns[u]
            top = tops[u]
            nearest: str | None
            if request_ids[u]:
                # A repeat within the batch: its nearest is the previous request of the same prompt; the prompt's
                # own window row (if any) is superseded by it.
                nearest, score, exact = latest[column], 1.0, True
                matches = [{"id": nearest, "score": score}]
                matches += [{"id": latest[p], "score": s} for p, s in top if p != column][: k - 1]
            else:
                nearest, score = (latest[top[0][0]], top[0][1]) if top else (None, 0.0)
                exact = in_window[u]
                matches = [{"id": latest[p], "score": s} for p, s in top]
            rows[i] = {
                "id": item.id,
                "ts": item.ts,
                "project": item.project,
                "model": item.model,
                "prompt_hash": digest,
                "nearest_id": nearest,
                "score": score,
                "matches": matches,
                "near_duplicate": score >= threshold,
                "exact_duplicate": exact,
            }
            latest[column] = item.id
            request_ids[u].append(item.id)
            last[u] = n
        self._update_window(win, uniq, vectors, request_ids, sorted(last, key=last.__getitem__))

    def _distinct_top_k(
        self, win: _Window, uniq: list[str], vectors: F32
    ) -> tuple[list[int], list[list[tuple[int, float]]]]:
        """The batch's distinct prompts against [the window's rows; the batch's distinct prompts]: each prompt's
        column (its window row if it is in the window, else its batch column) and its top k.

        A distinct prompt sees the window as it was before the batch and the batch's earlier distinct prompts; a
        batch column whose prompt is in the window is masked for all (that row stands for it, so no prompt is
        matched twice); a prompt in the window gets its own row first (an exact repeat's nearest is its latest
        request, whatever else scores 1.0)."""
        old = win.size
        n = len(uniq)
        slots = win.slots
        columns = [slots.get(d, old + u) for u, d in enumerate(uniq)]
        sims: F32 = np.empty((n, old + n), dtype=np.float32)
        if old:  # two products into one matrix: no copy of the window
            np.matmul(vectors, win.vectors[:old].T, out=sims[:, :old])
        np.matmul(vectors, vectors.T, out=sims[:, old:])
        sims[:, old:][np.triu(np.ones((n, n), dtype=bool))] = -2.0  # later ones and itself: below any cosine
        repeats = [u for u, c in enumerate(columns) if c < old]
        if repeats:
            own = [columns[u] for u in repeats]
            sims[:, [old + u for u in repeats]] = -2.0
            sims[repeats, own] = 2.0  # clipped to 1.0 by _top_k
        return columns, self._top_k(sims)

    @staticmethod
    def _update_window(
        win: _Window, uniq: list[str], vectors: F32, request_ids: list[list[str]], order: list[int]
    ) -> None:
        """The batch's prompts into the window, in the order they were LAST seen (that is the LRU order): a prompt
        of the window gets its new request ids, a new one a row. A prompt of the window evicted by this very batch
        (more new prompts than the window holds) comes back with this batch's ids only."""
        placed: dict[int, int] = {}  # row -> u; a row given out twice in one batch keeps the later prompt
        for u in order:
            digest = uniq[u]
            if not win.seen(digest, request_ids[u]):
                placed[win.place(digest, request_ids[u])] = u
        win.write(list(placed), vectors[list(placed.values())])

    def _top_k(self, sims: F32) -> list[list[tuple[int, float]]]:
        """Per row: the positions and scores of its k best positive scores, best first (all rows at once; `sims` is
        overwritten). k passes of argmax rather than argpartition, which crawls on rows of many equal scores
        (templated prompts that differ only in what normalisation drops score the same)."""
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
