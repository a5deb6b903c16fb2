"""The rules both stores share for versioned policies (the SQL is in sqlite_policies.py and postgres_policies.py).

A policy's versions are 1, 2, ... with no gap; a deletion is a version too. `seq` numbers every saved version of
every policy in the order they were committed, so its maximum is a revision a poller can compare cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.base import PolicyConflict, PolicyVersion

COLUMNS = ("name", "version", "source", "author", "created_at", "deleted")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM policy_versions"
# The newest version of each name, when it is not a deletion. Plain SQL both databases run as they are.
LIVE = (
    f"{SELECT} AS p WHERE version = (SELECT max(version) FROM policy_versions WHERE name = p.name)"
    " AND NOT deleted ORDER BY name"
)


def next_version(name: str, latest: PolicyVersion | None, expected: int | None) -> int:
    """The version a save gets, or PolicyConflict when `expected` (the latest version the caller saw; 0 for a policy
    that must not exist yet or was deleted) is not the latest."""
    current = latest.version if latest is not None else 0
    if expected is None:
        return current + 1
    live = latest is not None and not latest.deleted
    if expected == current or (expected == 0 and not live):
        return current + 1
    if expected == 0:
        raise PolicyConflict(f"A policy named {name!r} exists (version {current}).")
    if latest is None:
        raise PolicyConflict(f"There is no policy {name!r}: expected version {expected}.")
    raise PolicyConflict(f"The policy {name!r} is at version {current}, not {expected}: read it again.")


def version(row: Sequence[Any]) -> PolicyVersion:
    name, number, source, author, created_at, deleted = row
    return PolicyVersion(
        name=name, version=number, source=source, author=author, created_at=created_at, deleted=bool(deleted)
    )
