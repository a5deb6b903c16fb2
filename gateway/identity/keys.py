"""Virtual keys: made here, shown once, stored only as a SHA-256 digest, and cached per worker; config keys' ids.

A key is `sk-gw-` and 32 URL-safe characters (192 random bits). The store keeps its digest and a display prefix;
the key itself exists only in the answer that created it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import math
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.context import Principal
from gateway.errors import InvalidRequest
from gateway.store.base import StoreUnavailable
from gateway.store.rows import VirtualKey
from gateway.types import Clock

KEY_PREFIX = "sk-gw-"
ROLES = ("admin", "developer", "viewer", "billing")
PERIODS = ("day", "month")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# The admin key's id: not of the form config_key_id makes, so that no config key can share it.
ADMIN_KEY_ID = "ck_admin"


def config_key_id(name: str) -> str:
    """A config key's id in records, limits and usage. Made from its name, never from the secret: a prefix of the
    key's hash, shown to viewers, would let them test guesses of a weak key offline. The same in every process and
    replica, and across restarts, for as long as the key keeps its name (config names are unique)."""
    return "ck_" + hashlib.sha256(b"gateway config key\x00" + name.encode()).hexdigest()[:16]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)  # 24 bytes -> 32 characters


def principal_of(row: VirtualKey) -> Principal:
    """Who a virtual key's row says is calling."""
    ends = [t for t in (row.expires_at, row.revoked_at) if t is not None]
    return Principal(
        name=row.name or row.id,
        key_id=row.id,
        project=row.project,
        team=row.team,
        user=row.user_id,
        role=row.role,
        metadata=dict(row.metadata),
        allowed_models=frozenset(row.allowed_models),
        rpm=row.rpm,
        tpm=row.tpm,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
        expires_at=min(ends) if ends else 0.0,
        source="virtual",
    )


def issue(
    fields: Mapping[str, Any], *, now: float | None = None, rotated_from: str | None = None
) -> tuple[str, VirtualKey]:
    """A new key and its row from the admin API's (or the CLI's) fields; InvalidRequest names a bad field."""
    allowed = {"name", "project", "team", "user", "role", "allowed_models", "models", "rpm", "tpm", "budget_usd",
               "budget_period", "expires_at", "expires_days", "metadata"}  # fmt: skip
    for name in fields:
        if name not in allowed:
            raise InvalidRequest(f"Unknown field {name!r}.", param=name)
    now = time.time() if now is None else now
    key = new_key()
    budget, period = parse_budget(fields.get("budget_usd", 0), fields.get("budget_period"))
    expires_at = _number(fields, "expires_at", None)
    days = _number(fields, "expires_days", None)
    if days is not None:
        expires_at = now + days * 86400
    row = VirtualKey(
        id=_new_id(),
        key_hash=key_digest(key),
        key_prefix=_display_prefix(key),
        name=_text(fields, "name", ""),
        project=_text(fields, "project", "default") or "default",
        team=_text(fields, "team", ""),
        user_id=_text(fields, "user", ""),
        role=_choice(fields, "role", ROLES, "developer"),
        allowed_models=_models(fields.get("allowed_models", fields.get("models"))),
        rpm=_limit(fields, "rpm"),
        tpm=_limit(fields, "tpm"),
        budget_usd=budget,
        budget_period=period,
        expires_at=expires_at,
        metadata=_metadata(fields.get("metadata")),
        created_at=now,
        rotated_from=rotated_from,
    )
    return key, row


def successor(old: VirtualKey, *, now: float | None = None) -> tuple[str, VirtualKey]:
    """A rotation's new key: the old one's attributes, a new secret, and a link back."""
    key = new_key()
    row = dataclasses.replace(
        old,
        id=_new_id(),
        key_hash=key_digest(key),
        key_prefix=_display_prefix(key),
        revoked_at=None,
        created_at=time.time() if now is None else now,
        rotated_from=old.id,
    )
    return key, row


EDITABLE = ("name", "allowed_models", "models", "rpm", "tpm", "budget_usd", "budget_period", "metadata")


def edited(old: VirtualKey, fields: Mapping[str, Any]) -> VirtualKey:
    """The key with the fields the admin API lets an edit change (its models, rate limits, budget, name and
    metadata), read as `issue` reads them; a field not given stays as it was. InvalidRequest names a bad field, or
    one that cannot be changed (project, team, user, role: who the key is; create another key instead)."""
    for name in fields:
        if name not in EDITABLE:
            fixed = name in ("project", "team", "user", "role", "expires_at", "expires_days")
            why = "cannot be changed: create a new key instead" if fixed else "is not a field of a key"
            raise InvalidRequest(f"{name!r} {why}.", param=name)
    changes: dict[str, Any] = {}
    if "name" in fields:
        changes["name"] = _text(fields, "name", "")
    if "allowed_models" in fields or "models" in fields:
        changes["allowed_models"] = _models(fields.get("allowed_models", fields.get("models")))
    for limit in ("rpm", "tpm"):
        if limit in fields:
            changes[limit] = _limit(fields, limit)
    if "budget_usd" in fields or "budget_period" in fields:
        period = fields.get("budget_period")
        amount = fields.get("budget_usd", old.budget_usd)
        if period is None and not (isinstance(amount, str) and "/" in amount):
            period = old.budget_period  # a new amount keeps the period it had
        changes["budget_usd"], changes["budget_period"] = parse_budget(amount, period)
    if "metadata" in fields:
        changes["metadata"] = _metadata(fields["metadata"])
    return dataclasses.replace(old, **changes)


def _new_id() -> str:
    return "vk_" + os.urandom(8).hex()


def _display_prefix(key: str) -> str:
    # The fixed prefix and 8 of the 32 random characters: enough to tell keys apart; 144 bits stay secret.
    return key[: len(KEY_PREFIX) + 8]


def parse_budget(value: Any, period: Any = None) -> tuple[float, str]:
    """`50`, `50.5`, or `"50/month"` / `"5/day"`; a separate period wins over none in the value."""
    amount: Any = value
    if isinstance(value, str):
        amount, _, in_value = value.partition("/")
        period = period or in_value or None
        try:
            amount = float(amount)
        except ValueError:
            raise InvalidRequest(f"budget_usd must be a number or AMOUNT/day|month, got {value!r}.",
                                 param="budget_usd") from None  # fmt: skip
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
        raise InvalidRequest("budget_usd must be a non-negative number.", param="budget_usd")
    period = period or "month"
    if period not in PERIODS:
        raise InvalidRequest(f"budget_period must be day or month, got {period!r}.", param="budget_period")
    return float(amount), str(period)


def _text(fields: Mapping[str, Any], name: str, default: str) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidRequest(f"{name} must be a string of at most 200 characters.", param=name)
    return value


def _choice(fields: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = fields.get(name, default)
    if value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}.", param=name)
    return str(value)


def _number(fields: Mapping[str, Any], name: str, default: float | None) -> float | None:
    value = fields.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"{name} must be a non-negative number.", param=name)
    return float(value)


# A limit per minute beyond this is no limit anyone means, and past 2**63 the stores' integer columns cannot hold it.
MAX_LIMIT = 10**12


def _limit(fields: Mapping[str, Any], name: str) -> int:
    """rpm or tpm: a whole number from 0 (no limit) to MAX_LIMIT (1.5 requests a minute is not a limit to round)."""
    value = _number(fields, name, 0) or 0
    if value > MAX_LIMIT or value != int(value):
        raise InvalidRequest(f"{name} must be a whole number from 0 to {MAX_LIMIT}.", param=name)
    return int(value)


def _models(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise InvalidRequest("allowed_models must be a list of model names.", param="allowed_models")
    return list(value)


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest("metadata must be an object of strings.", param="metadata")
    return dict(value)


class KeyStore(Protocol):
    async def key_by_hash(self, key_hash: str) -> VirtualKey | None: ...


@dataclass(slots=True)
class Lookup:
    """What the cache knows of a digest: the key's principal, or why there is none."""

    principal: Principal | None
    revoked_at: float | None = None


_UNKNOWN = Lookup(None)


class KeyCache:
    """Per-worker cache of virtual keys by digest, so the hot path reads the store once per key per TTL.

    Unknown digests are cached too (for `negative_ttl_s`), and concurrent misses on one digest share one query.
    A revoked key is dropped from every worker within `ttl_s`; an expiry is checked on every hit.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float,
        negative_ttl_s: float,
        max_entries: int = 100_000,
        lookup_timeout_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.lookup_timeout_s = lookup_timeout_s
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Lookup]] = {}
        self._pending: dict[str, asyncio.Future[Lookup]] = {}
        self.queries = 0  # store reads, for tests and metrics

    async def get(self, digest: str) -> Lookup:
        now = self.clock()
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Lookup] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            try:
                lookup = await self._fetch(digest)
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
                if entry is not None:  # the store is down: a key known a moment ago stays usable
                    return entry[1]
                raise
            future.set_result(lookup)
        finally:
            del self._pending[digest]
        if len(self._entries) >= self.max_entries:
            # Crude but bounded: a flood of distinct bad keys can grow this only so far.
            self._entries.clear()
        ttl = self.ttl_s if lookup.principal is not None or lookup.revoked_at is not None else self.negative_ttl_s
        self._entries[digest] = (now + ttl, lookup)
        return lookup

    async def _fetch(self, digest: str) -> Lookup:
        self.queries += 1
        try:
            async with asyncio.timeout(self.lookup_timeout_s):  # a request never waits longer on a hung store
                row = await self.store.key_by_hash(digest)
        except TimeoutError:
            raise StoreUnavailable(f"no answer from the key store within {self.lookup_timeout_s:g} s") from None
        # The store found the row by its digest; compare once more in constant time, as a second lock.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return _UNKNOWN
        return Lookup(principal_of(row), row.revoked_at)

    def invalidate(self, digest: str | None = None) -> None:
        """Forget one digest (or all): this worker then sees a change made through it at once."""
        if digest is None:
            self._entries.clear()
        else:
            self._entries.pop(digest, None)
