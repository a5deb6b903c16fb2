"""The Store protocol: where records end up. SQLite is the embedded default; PostgreSQL comes with telemetry."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gateway.identity.keys import VirtualKey
    from gateway.store.analytics_sql import GroupBy, Kind, UsageBy
    from gateway.store.trace_query import TraceQuery

Record = dict[str, Any]

# The columns of model_cost_logs, in the order stores write them; JSON columns are serialised by the store.
RECORD_COLUMNS = (
    "id", "ts", "endpoint", "key_name", "key_id", "project", "team", "user_id", "model_requested", "model_served",
    "provider", "deployment", "status", "error_type", "error_domain", "stream", "latency_ms", "upstream_ms", "ttfb_ms",
    "ttft_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
    "total_tokens", "cost_usd", "usage_source", "spans", "tags", "attempts", "route_reason", "guardrails",
    "trace_id", "parent_span_id", "content_input", "content_output", "metadata", "client_request_id",
)  # fmt: skip
JSON_COLUMNS = frozenset({"spans", "tags", "guardrails", "metadata"})


class StoreUnavailable(Exception):
    """The store cannot be reached; callers degrade (the queue keeps records, readiness reports it)."""


logger = logging.getLogger("gateway.store")
Row = tuple[Any, ...]
# A value the driver cannot encode (an int past 64 bits, say): retrying the same rows cannot help.
UNENCODABLE = (OverflowError, TypeError, ValueError)


async def write_leaving_out_refused(
    write: Callable[[list[Row]], Awaitable[None]], rows: list[Row], refused: tuple[type[Exception], ...], where: str
) -> None:
    """write(rows), one batch. If the database refuses a value (`refused`, the cause of its StoreUnavailable) or
    the driver cannot encode one, the rows are written one by one and the refused ones left out and logged: one
    bad value must not hold back every record behind it for ever (the batch would be retried, then spooled,
    until the spool is full). Any other failure is raised, for the outbox to retry."""

    def is_refused(exc: Exception) -> bool:
        return isinstance(exc, UNENCODABLE) or isinstance(exc.__cause__, refused)

    try:
        await write(rows)
        return
    except (StoreUnavailable, *UNENCODABLE) as exc:
        if not is_refused(exc):
            raise
    left_out: list[str] = []
    for row in rows:
        try:
            await write([row])
        except (StoreUnavailable, *UNENCODABLE) as exc:
            if not is_refused(exc):
                raise
            left_out.append(f"{row[0]} ({type(exc.__cause__ or exc).__name__})")
    if left_out:
        logger.error("%s: %d records refused, left out: %s", where, len(left_out), ", ".join(left_out))


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


@runtime_checkable
class TraceStore(Protocol):
    """Records read back as traces, time series and usage sums (gateway/store/trace_query.py and analytics_sql.py
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


def key_store(store: Store | None) -> KeyStore | None:
    """The store's virtual keys, if it keeps them."""
    return store if isinstance(store, KeyStore) else None


def open_store(url: str) -> Store | None:
    if url in ("", "none"):
        return None
    if url.startswith("sqlite://"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite://").removeprefix("/") or ":memory:")
    if url.startswith(("postgres://", "postgresql://")):
        from gateway.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported store {url!r}")
