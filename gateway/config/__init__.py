"""The typed configuration: frozen dataclasses, one per section of gateway.yaml.

`load_config(path)` parses the YAML, interpolates `${VAR}` and `${VAR:-default}`, rejects unknown keys, checks
cross-references (and runs the `checks` of the layers above: gateway/load.py adds the pipeline's), and raises one
`ConfigError` that lists every problem with its file and key path:

    gateway.yaml: models.gpt-4o.deployments[0].provider: unknown provider 'opena'
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway.config.cache import CacheConfig, check_cache
from gateway.config.checks_routing import check_limits, check_routing
from gateway.config.console import ConsoleConfig, check_console
from gateway.config.guardrails import GuardrailsConfig
from gateway.config.redis_url import redis_url_problem
from gateway.config.responses import ResponsesConfig, check_responses
from gateway.config.telemetry import (
    FeaturesConfig,
    SimilarityConfig,
    TelemetryConfig,
    check_telemetry,
    store_problem,
)

ProviderType = Literal["openai", "azure", "anthropic", "gemini", "mock"]
AuthMode = Literal["none", "keys"]
Role = Literal["admin", "developer", "viewer", "billing"]
Strategy = Literal["weighted", "round-robin", "least-in-flight", "lowest-latency", "lowest-cost"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_mb: float = 16.0
    # The edges of the HTTP server (gateway/server/protocol.py), per worker process.
    max_connections: int = 1024
    max_header_bytes: int = 65_536
    header_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    write_timeout_s: float = 60.0
    drain_timeout_s: float = 30.0
    drain_delay_s: float = 0.0
    access_log: bool = True
    # CIDRs of the proxies whose X-Forwarded-For is believed (per-IP limits); empty: the peer address only.
    trusted_proxies: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 120.0
    idle_s: float = 60.0
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    type: ProviderType
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    api_version: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    max_connections: int = 1000
    optional: bool = False
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    # type openai: the server speaks OpenAI's Responses API too, and serves /v1/responses in it (see the README).
    responses_api: bool = False


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    provider: str
    model: str
    region: str = ""
    weight: float = 1.0
    tags: list[str] = field(default_factory=list)
    price: Price | None = None
    timeouts: Timeouts | None = None
    rpm: int = 0  # capacity: requests per minute it may take from this gateway (0: no limit)
    tpm: int = 0  # capacity: tokens per minute (0: no limit)
    max_input_tokens: int = 0  # context window, for context-window fallback (0: unknown)

    @property
    def id(self) -> str:
        """One upstream target, whichever groups list it: its health is shared by them all."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class ModelGroup:
    deployments: list[Deployment]
    strategy: Strategy | None = None  # default: routing.strategy
    fallbacks: list[str] = field(default_factory=list)
    context_window_fallback: str = ""
    content_policy_fallback: str = ""


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.25
    max_s: float = 8.0


@dataclass(frozen=True, slots=True)
class RetryBudget:
    ratio: float = 0.2  # retries may be at most this share of a deployment's requests...
    min_per_s: float = 1.0  # ...plus this many per second, so that a quiet deployment can still retry


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 20
    cooldown_s: float = 10.0
    max_cooldown_s: float = 300.0
    sync_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    batch_size: int = 100
    flush_interval_ms: int = 1000
    timeout_s: float = 5.0
    max_backoff_s: float = 30.0  # retries back off exponentially, with jitter, up to this
    spool_max_mb: float = 64.0  # the disk spool's cap while the webhook is down (telemetry.spool_dir); 0: none


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    strategy: Strategy = "weighted"
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2
    backoff: Backoff = field(default_factory=Backoff)
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    events_webhook: WebhookConfig = field(default_factory=WebhookConfig)


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    key: str = field(default="", repr=False)
    key_sha256: str = field(default="", repr=False)
    project: str = "default"
    team: str = ""
    user: str = ""
    role: Role = "developer"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JwtClaims:
    """Which claim of a token carries each attribute of the caller."""

    user: str = "sub"
    team: str = "team"
    project: str = "project"
    role: str = "role"


@dataclass(frozen=True, slots=True)
class JwtConfig:
    hs256_secret: str = field(default="", repr=False)
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""
    leeway_s: float = 30.0
    claims: JwtClaims = field(default_factory=JwtClaims)
    required_claims: list[str] = field(default_factory=lambda: ["exp", "sub"])
    jwks_cache_s: float = 300.0
    jwks_min_refresh_s: float = 5.0  # an unknown kid refetches the JWKS at most this often
    jwks_timeout_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.hs256_secret or self.jwks_url)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    mode: AuthMode = "keys"
    keys: list[KeyConfig] = field(default_factory=list)
    admin_key: str = field(default="", repr=False)
    cache_ttl_s: float = 10.0  # how long a worker trusts a virtual key it has read: revocation lags this much
    negative_cache_ttl_s: float = 2.0  # unknown keys, so that a flood of bad keys cannot hammer the store
    # A virtual key's lookup with no answer from the store within this long fails the request with 503 (a key read
    # a moment ago is still served from the cache): a hung store holds no request longer.
    lookup_timeout_s: float = 1.0
    jwt: JwtConfig = field(default_factory=JwtConfig)


@dataclass(frozen=True, slots=True)
class StateConfig:
    backend: str = field(default="memory", repr=False)  # or redis://host:port/db, redis+cluster://host:port,...


LimitScope = Literal["key", "user", "team", "project", "model", "global", "ip"]
BudgetPeriod = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One rule of `limits.rules`; 0 means no limit of that kind. See README, "Rate limits and budgets"."""

    scope: LimitScope
    match: str = ""  # only the key/user/team/project/model (or ip) of this name; empty: each one its own counter
    rpm: int = 0
    tpm: int = 0
    burst: int = 0  # token bucket capacity in requests (default: rpm)
    burst_tokens: int = 0  # token bucket capacity in tokens (default: tpm)
    concurrency: int = 0  # requests in flight
    budget_usd: float = 0.0  # key, team and project scopes only
    period: BudgetPeriod = "month"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    backend: str = field(default="memory", repr=False)  # or redis://host:port/db, redis+cluster://host:port,...
    algorithm: Literal["token-bucket", "sliding-window"] = "token-bucket"
    fail: Literal["open", "closed"] = "open"  # when Redis is unreachable
    default_completion_tokens: int = 1000  # the reservation when a request sets no max_tokens
    soft_pct: float = 80.0  # a budget past this share of its cap emits budget_soft_limit
    retry_interval_s: float = 2.0  # after a Redis failure, per-process limits for this long, then Redis again
    timeout_ms: float = 250.0  # Redis connect and read timeout
    rules: list[LimitRule] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    paths: list[str] = field(default_factory=list)  # policy files or folders of them (*.yaml; tests/ skipped)
    reload: bool = True  # pick up changed files (and API-created policies) without a restart
    poll_interval_s: float = 1.0  # how often files' mtimes and the store's policy revision are checked


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: dict[str, ModelGroup] = field(default_factory=dict)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    pipeline: list[str] = field(default_factory=lambda: ["auth", "route"])
    auth: AuthConfig = field(default_factory=AuthConfig)
    state: StateConfig = field(default_factory=StateConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # Where the file was read from: relative paths inside it (pricing_file) resolve against its folder.
    base_dir: str = "."

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def enabled_providers(self) -> dict[str, ProviderConfig]:
        """Providers marked `optional` whose api_key is empty are left out, with their deployments."""
        return {n: p for n, p in self.providers.items() if not (p.optional and not p.api_key)}


class ConfigError(Exception):
    """A configuration that cannot be loaded. Never reaches a client: the gateway refuses to start."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {path}: {problem}" if path else f"{self.source}: {problem}" for path, problem in self]

    def __iter__(self) -> typing.Iterator[tuple[str, str]]:
        return iter(self.problems)


Problem = tuple[str, str]  # (key path, problem)
# A check of the layers above this one (the pipeline's filters), run with the cross-reference pass.
Checker = typing.Callable[["GatewayConfig"], list[Problem]]


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, checks: typing.Sequence[Checker] = ()
) -> GatewayConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror or exc}")]) from None
    env = os.environ if env is None else env
    return parse_config(text, source=source, env=env, base_dir=str(Path(path).parent), checks=checks)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str = ".",
    checks: typing.Sequence[Checker] = (),
) -> GatewayConfig:
    try:
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [("", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    problems: list[tuple[str, str]] = []
    data = _interpolate(data, env if env is not None else os.environ, "", problems)
    config = _convert(GatewayConfig, data, "", problems)
    if isinstance(config, GatewayConfig):
        config = dataclasses.replace(config, base_dir=base_dir)
        _check_references(config, problems)
        for check in checks:
            problems += check(config)
    if problems:
        raise ConfigError(source, problems)
    assert isinstance(config, GatewayConfig)
    return config


# PyYAML's C loader is about ten times faster than the pure-Python one; both are `safe`.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_WORDS = ("key", "secret", "password", "token", "url", "store", "backend", "dsn")


def _interpolate(value: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> Any:
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            # `${VAR}` asks for a value: set but empty (a blank Secret, `VAR=` in an env file) is as good as unset,
            # and would otherwise turn, say, the admin key off without a word. `${VAR:-}` allows empty.
            state = "is empty" if name in env else "is not set"
            problems.append((path, f"environment variable {name} {state} (use ${{{name}:-default}})"))
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(path: str, value: Any) -> str:
    """A value for a problem's message: never a secret's, nor a header's (Authorization, api-key), nor a URL's that
    may carry a password (a store, a Redis backend, a webhook)."""
    parts = [re.sub(r"\[\d+\]$", "", part).lower() for part in path.split(".")]
    if "headers" in parts or any(word in parts[-1] for word in _SECRET_WORDS):
        return "(hidden)"
    return repr(value)


_NO_VALUE = object()


def _convert(tp: Any, value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {type(value).__name__}"))
            return _NO_VALUE
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.name != "base_dir"}
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            key_path = _join(path, str(key))
            if key not in fields:
                problems.append((key_path, f"unknown key (expected one of: {', '.join(fields)})"))
                continue
            converted = _convert(hints[key], item, key_path, problems)
            if converted is not _NO_VALUE:
                kwargs[key] = converted
        missing = [
            name
            for name, f in fields.items()
            if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        for name in missing:
            problems.append((_join(path, name), "required key is missing"))
        if missing or len(kwargs) != len([k for k in value if k in fields]):
            return _NO_VALUE
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            problems.append((path, f"expected a list, got {type(value).__name__}"))
            return _NO_VALUE
        (item_tp,) = typing.get_args(tp)
        items = [_convert(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _NO_VALUE if _NO_VALUE in items else items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {type(value).__name__}"))
            return _NO_VALUE
        _, item_tp = typing.get_args(tp)
        result = {str(k): _convert(item_tp, v, _join(path, str(k)), problems) for k, v in value.items()}
        return _NO_VALUE if _NO_VALUE in result.values() else result
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            problems.append((path, f"must be one of {', '.join(map(repr, choices))}, got {_show(path, value)}"))
            return _NO_VALUE
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) > 1:  # a union of scalars (FlagValue): the first type the value spells
            for arg in args:
                scratch: list[tuple[str, str]] = []
                converted = _convert(arg, value, path, scratch)
                if not scratch and (arg is not str or isinstance(value, str)):
                    return converted
            names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
            problems.append((path, f"expected {names}, got {_show(path, value)}"))
            return _NO_VALUE
        return _convert(args[0], value, path, problems)
    return _scalar(tp, value, path, problems)


def _scalar(tp: Any, value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    # Values from ${VAR} arrive as strings: accept them where they spell the type asked for.
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    problems.append((path, f"expected {tp.__name__}, got {_show(path, value)}"))
    return _NO_VALUE


def _check_references(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    # The pipeline list is checked where filters are known (gateway/pipeline.py, through gateway/load.py).
    if config.policies.poll_interval_s <= 0:
        problems.append(("policies.poll_interval_s", "must be positive"))
    if config.guardrails.stream_holdback_chars < 0:
        problems.append(("guardrails.stream_holdback_chars", "must not be negative"))
    if not config.guardrails.json_schema_max_kb > 0:
        problems.append(("guardrails.json_schema_max_kb", "must be positive"))
    check_telemetry(config, problems)
    check_responses(config, problems)
    check_cache(config, problems)
    check_console(config.console, problems)
    for name, group in config.models.items():
        if not group.deployments:
            problems.append((f"models.{name}.deployments", "at least one deployment is needed"))
        if name.count("*") > 1 or ("*" in name and not name.endswith("*")):
            problems.append((f"models.{name}", "a wildcard model is a prefix ending in a single *"))
        chain = [(f"fallbacks[{i}]", n) for i, n in enumerate(group.fallbacks)]
        chain += [("context_window_fallback", group.context_window_fallback)]
        chain += [("content_policy_fallback", group.content_policy_fallback)]
        for key_path, target in chain:
            if target and (target not in config.models or target == name):
                problems.append((f"models.{name}.{key_path}", f"unknown model {target!r}"))
        for i, dep in enumerate(group.deployments):
            if dep.provider not in config.providers:
                problems.append((f"models.{name}.deployments[{i}].provider", f"unknown provider {dep.provider!r}"))
            if dep.weight < 0:
                problems.append((f"models.{name}.deployments[{i}].weight", "must not be negative"))
    for name, provider in config.providers.items():
        if provider.type in ("openai", "azure") and not provider.base_url:
            problems.append((f"providers.{name}.base_url", f"required for type {provider.type!r}"))
        if provider.type == "azure" and not provider.api_version:
            problems.append((f"providers.{name}.api_version", "required for type 'azure'"))
        if provider.responses_api and provider.type != "openai":
            problems.append((f"providers.{name}.responses_api", "only for type 'openai'"))
    names: set[str] = set()
    for i, key in enumerate(config.auth.keys):
        if bool(key.key) == bool(key.key_sha256):
            problems.append((f"auth.keys[{i}]", "give exactly one of key and key_sha256"))
        if not key.name or key.name in names:  # the name is the key's identity: its id is made from it
            problems.append((f"auth.keys[{i}].name", "must be set and differ from every other key's"))
        names.add(key.name)
    if config.auth.cache_ttl_s < 0 or config.auth.negative_cache_ttl_s < 0:
        problems.append(("auth.cache_ttl_s", "must not be negative"))
    if config.auth.lookup_timeout_s <= 0:
        problems.append(("auth.lookup_timeout_s", "must be positive"))
    jwt = config.auth.jwt
    if jwt.jwks_url and not jwt.jwks_url.startswith(("https://", "http://")):
        problems.append(("auth.jwt.jwks_url", "must be an http(s) URL"))
    if jwt.hs256_secret and len(jwt.hs256_secret) < 32:
        problems.append(("auth.jwt.hs256_secret", "must be at least 32 characters (RFC 7518 3.2)"))
    check_routing(config, problems)
    if config.server.max_body_mb <= 0:
        problems.append(("server.max_body_mb", "must be positive"))
    if config.server.workers < 1:
        problems.append(("server.workers", "must be at least 1"))
    if config.server.max_connections < 1:
        problems.append(("server.max_connections", "must be at least 1"))
    if config.server.max_header_bytes < 1024:
        problems.append(("server.max_header_bytes", "must be at least 1024"))
    for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "write_timeout_s"):
        if not getattr(config.server, name) > 0:
            problems.append((f"server.{name}", "must be positive"))
    if (store := store_problem(config.telemetry.store)) is not None:
        problems.append(("telemetry.store", store))
    for table, days in config.telemetry.retention_days.items():  # responses: check_responses says where it is set
        tables = "model_cost_logs, event_logs, prompt_similarity_logs"
        if table not in tables.split(", ") and table != "responses":
            problems.append((f"telemetry.retention_days.{table}", f"no such table ({tables})"))
        elif days <= 0:
            problems.append((f"telemetry.retention_days.{table}", "must be positive"))
    similarity = config.similarity
    if min(similarity.window, similarity.k, similarity.max_projects, similarity.queue_size, similarity.max_chars) < 1:
        problems.append(("similarity", "window, k, max_projects, queue_size and max_chars must be at least 1"))
    if not 0 < similarity.near_duplicate_threshold <= 1:
        problems.append(("similarity.near_duplicate_threshold", "must be in (0, 1]"))
    if config.telemetry.maintenance_interval_s <= 0:
        problems.append(("telemetry.maintenance_interval_s", "must be positive"))
    for path, url in (("state.backend", config.state.backend), ("limits.backend", config.limits.backend)):
        if problem := redis_url_problem(url):
            problems.append((path, problem))
    check_limits(config, problems)
