"""The store's own row types: what it reads and writes besides request records (gateway/store/records.py).
The store is a leaf: the components that use these rows import them from here, never the reverse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.telemetry import FlagValue


@dataclass(slots=True)
class VirtualKey:
    """One row of `virtual_keys`. `key_hash` is the SHA-256 hex digest; the key itself is never held."""

    id: str
    key_hash: str
    key_prefix: str
    name: str = ""
    project: str = "default"
    team: str = ""
    user_id: str = ""
    role: str = "developer"
    allowed_models: list[str] = field(default_factory=list)
    rpm: int = 0
    tpm: int = 0
    budget_usd: float = 0.0
    budget_period: str = "month"
    expires_at: float | None = None
    revoked_at: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    rotated_from: str | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the digest."""
        return {
            "id": self.id,
            "object": "virtual_key",
            "name": self.name,
            "key_prefix": self.key_prefix,
            "project": self.project,
            "team": self.team,
            "user": self.user_id,
            "role": self.role,
            "allowed_models": self.allowed_models,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "rotated_from": self.rotated_from,
        }


@dataclass(frozen=True, slots=True)
class FlagOverride:
    """A feature flag's value set through the API; project "" is the global one."""

    project: str
    flag: str
    value: FlagValue
