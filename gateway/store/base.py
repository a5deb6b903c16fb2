"""The Store protocol: where records end up. SQLite is the embedded default; PostgreSQL comes with telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import orjson

from gateway.store.records import (
    JSON_COLUMNS as JSON_COLUMNS,
    RECORD_COLUMNS as RECORD_COLUMNS,
    Record as Record,
    json_bytes,
)

if TYPE_CHECKING:
    from gateway.store.analytics_sql import GroupBy, Kind, UsageBy
    from gateway.store.rows import VirtualKey
    from gateway.store.trace_sql import TraceQuery


class StoreUnavailable(Exception):
    """The store cannot be reached; callers degrade (the queue keeps records, readiness reports it)."""


class StoreStalled(StoreUnavailable, TimeoutError):
    """An earlier write still waits for the store (a locked or hung database): the store hangs, as a timeout says."""


class RecordsRefused(Exception):
    """The store wrote a batch but for some records it refused: a value it cannot take, whatever its driver raised.
    Retrying them cannot help, and they must not hold back the records behind them: the outbox sets them aside in
    its dead-letter file. `refused`: (index in the batch, why) for each."""

    def __init__(self, where: str, refused: list[tuple[int, str]]) -> None:
        super().__init__(f"{where}: {len(refused)} records refused")
        self.refused = refused


class Unsure:
    """The rows of a table that may be in it already though their write failed (it timed out, or its connection was
    lost: the commit may have happened all the same), by record id, and everything right after opening (a batch the
    previous process wrote before it was killed, and will send again from its spool). Writing any of them again
    goes through a check that skips the rows the table holds; other batches are written plainly. By id, not "the
    next batch": the outbox may send a failed batch again in smaller pieces."""

    MAX_IDS = 100_000  # far more than a batch retried in pieces; past it, the oldest are forgotten

    def __init__(self) -> None:
        self.all = True
        self.ids: dict[str, None] = {}  # an ordered set

    def about(self, records: Sequence[Record]) -> bool:
        ids = self.ids
        return self.all or (bool(ids) and any(str(r.get("id")) in ids for r in records))

    def written(self, records: Sequence[Record]) -> None:
        self.all = False
        if self.ids:
            for r in records:
                self.ids.pop(str(r.get("id")), None)

    def failed(self, records: Sequence[Record]) -> None:
        ids = self.ids
        for r in records:
            ids[str(r.get("id"))] = None
        while len(ids) > self.MAX_IDS:
            del ids[next(iter(ids))]


logger = logging.getLogger("gateway.store")
Row = tuple[Any, ...]
SLICE = 128  # rows made between pauses: a big batch never holds the event loop for more than a fraction of a ms


def describe(exc: BaseException) -> str:
    """An error as a log line or a status shows it: its type, and its message when it has one."""
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


def _driver_error(exc: BaseException) -> BaseException:
    return exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None else exc


@dataclass(slots=True)
class _Halves:
    """What _split works on: a batch's rows, their records' positions, and where the refused ones go."""

    rows: list[Row]
    positions: list[int]
    refused: list[tuple[int, str]]
    write: Callable[[list[Row]], Awaitable[None]]
    unavailable: Callable[[BaseException], bool]


async def _split(batch: _Halves, lo: int, hi: int, error: BaseException) -> None:
    """rows[lo:hi] failed with `error`, not an outage: write its halves, split again what fails. A function of the
    module, not one nested in write_setting_aside_refused: a nested function that calls itself is a reference
    cycle (the function, its closure's cell), and it held the batch's rows until the garbage collector's next
    pass (some 10 MB a batch of a thousand, found as RSS after load)."""
    if hi - lo == 1:
        batch.refused.append((batch.positions[lo], describe(error)))
        return
    mid = (lo + hi) // 2
    for a, b in ((lo, mid), (mid, hi)):
        try:
            await batch.write(batch.rows[a:b])
        except Exception as exc:  # classified: an outage goes up, anything else is split
            if batch.unavailable(_driver_error(exc)):
                raise
            await _split(batch, a, b, exc)


async def write_setting_aside_refused(
    records: Sequence[Record],
    make_row: Callable[[Record], Row],
    write: Callable[[list[Row]], Awaitable[None]],
    unavailable: Callable[[BaseException], bool],
    where: str,
) -> None:
    """Make the rows of a batch and write them with `write`, one transaction. A record whose row cannot be made, or
    that the store refuses, is set aside (RecordsRefused, raised once all the others are written): when the batch
    fails for any reason other than the store being unavailable (`unavailable(exc)`, given the driver's error), it
    is split in halves, and those again, until the rows it refuses are alone; a few writes find one bad row in a
    batch of a thousand. A failure of the store itself is raised as it is, for the outbox to retry the whole batch
    (a half written before it is then written again: the stores write a batch after a failure without doubling
    the rows already there)."""
    rows: list[Row] = []
    positions: list[int] = []  # the index in `records` of each row
    refused: list[tuple[int, str]] = []
    for i, record in enumerate(records):
        if i and not i % SLICE:
            await asyncio.sleep(0)
        try:
            rows.append(make_row(record))
        except Exception as exc:  # noqa: BLE001 - whatever a record's values make the conversion raise
            refused.append((i, describe(exc)))
        else:
            positions.append(i)

    if rows:
        try:
            await write(rows)
        except Exception as exc:  # as in _split
            if unavailable(_driver_error(exc)):
                raise
            await _split(_Halves(rows, positions, refused, write, unavailable), 0, len(rows), exc)
    if refused:
        refused.sort()
        logger.error(
            "%s: %d of %d records refused, set aside: %s",
            where, len(refused), len(records), "; ".join(f"#{i} {why}" for i, why in refused[:5]),
        )  # fmt: skip
        raise RecordsRefused(where, refused)


class Store(Protocol):
    name: str

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot answer."""

    async def write(self, records: Sequence[Record]) -> None:
        """Write one batch in one transaction."""

    async def write_events(self, events: Sequence[Record]) -> None:
        """Write gateway events (id, ts, type, attrs) to the event log."""

    async def recent(self, *, limit: int = 100, project: str | None = None) -> list[Record]:
        """The newest records first, optionally of one project only."""

    async def retention(self, table: str, max_age_s: float) -> int:
        """Remove the rows of `table` older than max_age_s; how many."""


@runtime_checkable
class KeyStore(Protocol):
    """The virtual keys a store keeps (gateway/identity/keys.py); the key itself is never stored, only its digest."""

    async def create_key(self, key: VirtualKey) -> None: ...

    async def key_by_hash(self, key_hash: str) -> VirtualKey | None: ...

    async def get_key(self, key_id: str) -> VirtualKey | None: ...

    async def list_keys(self, *, project: str | None = None) -> list[VirtualKey]:
        """Newest first; of one project when given."""

    async def revoke_key(self, key_id: str, *, at: float) -> VirtualKey | None:
        """Revoked from `at` on (an earlier revocation stands); None if there is no such key."""

    async def rotate_key(self, key_id: str, new: VirtualKey, *, revoke_at: float) -> VirtualKey | None:
        """Insert `new` and revoke the old key at `revoke_at`, atomically; None if there is no such key."""

    async def update_key(self, key: VirtualKey, *, now: float) -> VirtualKey | None:
        """Write the editable fields of `key` (name, allowed models, rpm, tpm, budget, metadata) over its row's, unless
        the key is revoked by `now`; the row as it is then, or None if there is no such key not revoked."""


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One saved version of a policy created through the API. A deletion is a version too (`deleted`), so that
    the history stays whole and a rollback can bring a deleted policy back."""

    name: str
    version: int  # 1, 2, ... per name
    source: str  # the policy as YAML (one mapping), exactly as saved
    author: str
    created_at: float  # epoch seconds
    deleted: bool = False


class PolicyConflict(Exception):
    """A save named the version it meant to replace, and the policy has moved on since (or does not exist)."""


@runtime_checkable
class PolicyStore(Protocol):
    """The policies created through the API (files are read from disk, never stored), versioned."""

    async def save_policy(
        self, name: str, source: str, *, author: str, expected_version: int | None = None
    ) -> PolicyVersion:
        """A new version (the latest + 1). expected_version: the latest version the caller saw (0: the policy
        must not exist yet); a mismatch raises PolicyConflict. None: no check."""

    async def delete_policy(self, name: str, *, author: str) -> PolicyVersion | None:
        """Saves a deletion; None if there is no such live policy."""

    async def live_policies(self) -> list[PolicyVersion]:
        """The latest version of each policy whose latest version is not a deletion, by name."""

    async def policy_history(self, name: str) -> list[PolicyVersion]:
        """Every version of one policy, newest first; empty if it never existed."""

    async def policies_revision(self) -> int:
        """A number that grows whenever any policy is saved or deleted: cheap enough to poll every second."""


class StoredResponse(NamedTuple):
    """One response of the Responses API, kept so that a later turn's previous_response_id finds it (on any replica,
    after a restart) and GET /v1/responses/{id} returns it.

    Its objects are kept as JSON, encoded once (for the answer, memory's bound and the store's row) and read back
    when a later turn or a GET needs them: ten thousand responses in memory are twenty thousand byte strings,
    which the garbage collector never walks, rather than a quarter of a million dicts and lists, which each full
    collection would. A tuple: made at C speed, and untracked by the collector too."""

    id: str  # resp_...
    project: str
    created_at: float  # epoch seconds; the row's ts, by which retention removes it
    previous_response_id: str | None
    response_json: bytes  # the Response object exactly as GET /v1/responses/{id} returns it
    input_json: bytes  # this turn's input items (with ids), as input_items.list returns them

    @classmethod
    def of(
        cls,
        id: str,
        project: str,
        created_at: float,
        previous_response_id: str | None,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        *,
        response_json: bytes | None = None,
    ) -> StoredResponse:
        """A response from its objects, encoded here (what JSON cannot hold is kept as its text); `response_json`
        when the caller has encoded the response already."""
        return cls(
            id, project, created_at, previous_response_id,
            json_bytes(response) if response_json is None else response_json, json_bytes(input_items),
        )  # fmt: skip

    @property
    def response(self) -> dict[str, Any]:
        """The Response object, decoded anew at each use."""
        response: dict[str, Any] = orjson.loads(self.response_json)
        return response

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """This turn's input items, decoded anew at each use."""
        items: list[dict[str, Any]] = orjson.loads(self.input_json)
        return items

    @property
    def size(self) -> int:
        """What it weighs in memory, near enough: its JSON's bytes."""
        return len(self.response_json) + len(self.input_json)


@runtime_checkable
class ResponseStore(Protocol):
    """The stored responses (gateway/conversations.py keeps them in memory in front of this), each of one project:
    a read or a deletion for another project finds nothing."""

    async def save_responses(self, responses: Sequence[StoredResponse]) -> None:
        """Insert or replace each by id (a row of another project with the same id is left as it is), in one
        transaction: a batch costs the store one commit, as the records' batches do."""

    async def get_response(self, response_id: str, *, project: str) -> StoredResponse | None: ...

    async def delete_response(self, response_id: str, *, project: str) -> bool:
        """Whether there was such a response to delete."""

    async def response_chain(self, response_id: str, *, project: str, max_depth: int = 1000) -> list[StoredResponse]:
        """The response and its predecessors by previous_response_id, oldest first, all of `project` (one recursive
        query), at most `max_depth` of them (the newest). Empty when the response is not there or is of another
        project; a predecessor missing (deleted, past retention) or of another project ends the chain there."""


@runtime_checkable
class TraceStore(Protocol):
    """Records read back as traces, time series and usage sums (gateway/store/trace_sql.py and analytics_sql.py
    build the SQL)."""

    async def query_traces(self, q: TraceQuery) -> tuple[list[Record], str | None]:
        """One page of the records the query selects, and the cursor of the next page (None: the last)."""

    async def get_trace(self, record_id: str, *, project: str | None = None) -> Record | None:
        """One record with its spans; None if there is none (or it is of another project than `project`)."""

    async def timeseries(
        self,
        kind: Kind,
        *,
        interval_s: int,
        group_by: GroupBy = "none",
        since: float | None = None,
        until: float | None = None,
        project: str | None = None,
    ) -> list[Record]:
        """{"bucket", "group", ...figures} by bucket then group."""

    async def usage_summary(
        self, by: UsageBy, *, since: float | None = None, until: float | None = None, project: str | None = None
    ) -> list[Record]:
        """{"group", "requests", tokens, "cost_usd", "errors"} per key, team or project, the costliest first."""


def trace_store(store: Store | None) -> TraceStore | None:
    """The store's records as traces, if it can read them back."""
    return store if isinstance(store, TraceStore) else None


def policy_store(store: Store | None) -> PolicyStore | None:
    return store if isinstance(store, PolicyStore) else None


def response_store(store: Store | None) -> ResponseStore | None:
    """The store's stored responses, if it keeps them."""
    return store if isinstance(store, ResponseStore) else None


def key_store(store: Store | None) -> KeyStore | None:
    """The store's virtual keys, if it keeps them."""
    return store if isinstance(store, KeyStore) else None


def open_store(url: str, *, query_timeout_s: float = 5.0) -> Store | None:
    if url in ("", "none"):
        return None
    if url.startswith("sqlite://"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite://").removeprefix("/") or ":memory:")
    if url.startswith(("postgres://", "postgresql://")):
        from gateway.store.postgres import PostgresStore

        return PostgresStore(url, query_timeout_s=query_timeout_s)
    raise ValueError(f"unsupported store {url!r}")
