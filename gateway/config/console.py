"""The web console's part of the typed config (gateway/console/, served at /ui). gateway/config/__init__.py loads
it as part of GatewayConfig."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_SECRET_CHARS = 32


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    # Serve the console at /ui (same process and port). Off: /ui is not routed at all.
    enabled: bool = True
    # The HMAC key that signs session cookies (at least 32 characters; ${ENV} works). Empty: one derived from
    # auth.admin_key (the same in every worker and replica; rotating the admin key ends the sessions), or without
    # an admin key a random one made at start (sessions end with the process, and each worker has its own).
    session_secret: str = field(default="", repr=False)
    # How long a session lasts after sign-in (a JWT's session ends with the token's exp if that comes first).
    session_ttl_s: float = 8 * 3600.0
    # Mark the cookies Secure even when the request came over plain HTTP (TLS ended at a proxy in front).
    secure_cookies: bool = False


def check_console(console: ConsoleConfig, problems: list[tuple[str, str]]) -> None:
    if not console.session_ttl_s > 0:
        problems.append(("console.session_ttl_s", "must be positive"))
    if console.session_secret and len(console.session_secret) < MIN_SECRET_CHARS:
        problems.append(("console.session_secret", f"must be at least {MIN_SECRET_CHARS} characters"))
