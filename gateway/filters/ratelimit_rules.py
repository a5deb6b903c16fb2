"""`limits.rules` that can never apply, found before the gateway starts rather than discovered in production.

A rule's `match` is compared with the request's key (its id or its name), user, team, project, model or address;
a typo, or an id in a form the gateway no longer makes, would leave a limit silently unenforced. So:

- an **error** (`gateway check` fails, the gateway does not start) when the config alone proves that nothing can
  match: a key, user, team or project that no config key carries while nothing else can authenticate (no store
  for virtual keys, no JWTs), a key rule while every caller is anonymous, a model no model group serves, an `ip`
  that is not an address in the form the gateway compares, a `match` on scope global, and a key's old id (the
  first 12 hex digits of its SHA-256, which ids no longer are);
- a **warning** (printed by `gateway check`, logged at start) when the rule may match something the config does
  not list: a key name or id that no config key has, while virtual keys or JWTs could carry it; and when the
  pipeline has no ratelimit filter, so that no rule applies at all.
"""

from __future__ import annotations

import ipaddress

from gateway.config import GatewayConfig, KeyConfig
from gateway.identity.keys import ADMIN_KEY_ID, config_key_id, key_digest

Problem = tuple[str, str]  # (key path, message), as ConfigError lists them


def rule_problems(config: GatewayConfig) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) about config.limits.rules."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    rules = config.limits.rules
    if rules and "ratelimit" not in config.pipeline:
        warnings.append(("limits.rules", "the pipeline has no ratelimit filter: no rule applies"))
    keys = config.auth.keys
    identified = config.auth.mode == "keys" and "auth" in config.pipeline
    # Virtual keys (in the store) and JWTs carry names, projects and teams that the config does not list.
    elsewhere = config.telemetry.store not in ("", "none") or config.auth.jwt.enabled
    for i, rule in enumerate(rules):
        match = rule.match
        if not match:
            continue
        path = f"limits.rules[{i}].match"
        scope = rule.scope
        if scope == "global":
            errors.append((path, "scope global is one counter for every request: match never applies to it"))
        elif scope == "model":
            if not any(name == match or (name.endswith("*") and match.startswith(name[:-1])) for name in config.models):
                errors.append((path, f"no model {match!r} in models: requests for it are refused before counting"))
        elif scope == "ip":
            _check_address(path, match, errors)
        elif scope == "key":
            _check_key(path, match, config, identified, elsewhere, errors, warnings)
        else:
            carried = {getattr(key, "user" if scope == "user" else scope) for key in keys}
            if match not in carried and not elsewhere:
                problem = f"no key has the {scope} {match!r}, and nothing else can authenticate "
                errors.append((path, problem + "(no store for virtual keys, no JWTs)"))
    return errors, warnings


def _check_address(path: str, match: str, errors: list[Problem]) -> None:
    try:
        canonical = str(ipaddress.ip_address(match))
    except ValueError:
        errors.append((path, f"{match!r} is not an IP address: an ip rule matches one client address"))
        return
    if canonical != match:
        errors.append((path, f"write {canonical}: client addresses are compared in that form"))


def _check_key(
    path: str,
    match: str,
    config: GatewayConfig,
    identified: bool,
    elsewhere: bool,
    errors: list[Problem],
    warnings: list[Problem],
) -> None:
    if not identified:
        errors.append((path, "every caller is anonymous (auth mode none, or no auth filter): key rules never apply"))
        return
    keys = config.auth.keys
    known = {key.name for key in keys} | {config_key_id(key.name) for key in keys}
    if config.auth.admin_key:
        known |= {"admin", ADMIN_KEY_ID}
    if config.auth.jwt.enabled:
        known.add("jwt")  # the key id of every JWT caller
    if match in known:
        return
    old = next((key for key in keys if _old_id(key) == match), None)
    if old is not None:
        new_id = config_key_id(old.name)
        problem = f"{match} was the id of the key {old.name!r}, a prefix of its SHA-256; ids no longer derive from "
        errors.append((path, problem + f"the key: match its name, {old.name!r}, or its id, {new_id}"))
    elif elsewhere:
        problem = f"no config key is named {match!r} or has that id: the rule applies only to a virtual key (or "
        warnings.append((path, problem + "JWT user) of that name or id"))
    else:
        names = ", ".join(repr(key.name) for key in keys) or "none"
        problem = f"no key is named {match!r} or has that id (config keys: {names}), and nothing else can "
        errors.append((path, problem + "authenticate (no store for virtual keys, no JWTs)"))


def _old_id(key: KeyConfig) -> str:
    digest = key.key_sha256.lower() if key.key_sha256 else key_digest(key.key)
    return digest[:12]
