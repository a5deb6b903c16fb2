"""The telemetry part of the typed config: the store's queue, sinks, content logging, feature flags and prompt
similarity, with their checks. gateway/config/__init__.py loads it as part of GatewayConfig."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from gateway.config.cache import CACHE_MODES
from gateway.config.guardrails import GUARDRAIL_SETTINGS

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

# A PostgreSQL store's ?schema=: it is spliced into statements (CREATE SCHEMA, search_path), so only this.
STORE_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")

SinkType = Literal["langfuse", "otlp", "webhook"]
ContentMode = Literal["off", "redacted", "full"]
FlagValue = bool | str
CONTENT_MODES = ("off", "redacted", "full")
BOOLEAN_FLAGS = ("cost_tracking", "similarity")
FLAG_PREFIXES = ("sink.", "guardrail.")


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """An export of request records (gateway/sinks/exporters.py), delivered by its own outbox
    (gateway/sinks/outbox.py): bounded queue, batches, retries, and a disk spool while the sink is down."""

    type: SinkType
    # langfuse: the host (https://cloud.langfuse.com); otlp: the collector's base (http://collector:4318);
    # webhook: the full URL batches are POSTed to (or data_plane_url with a write key).
    url: str = field(default="", repr=False)
    public_key: str = ""  # langfuse
    secret_key: str = field(default="", repr=False)  # langfuse
    secret: str = field(default="", repr=False)  # webhook: the HMAC-SHA256 key signing each batch; empty: unsigned
    # webhook, as RudderStack and Segment take it: batches go to <data_plane_url>/v1/batch with HTTP Basic auth,
    # the write key as user and an empty password. Both or neither; data_plane_url instead of url.
    write_key: str = field(default="", repr=False)
    data_plane_url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # Records per request to the sink, at most. A record is about seven OTLP spans and two Langfuse events: 128
    # make a body of half a megabyte or so. Bigger bodies cost more CPU per record to build (4 -> 9 µs at 512, on
    # the telemetry bench) and come nearer the size a collector or Langfuse accepts in one request.
    batch_size: int = 128
    # Bytes per request to the sink, at most: a batch whose encoding is bigger goes in several requests. None: the
    # sink type's own (Langfuse 3,000,000, its batches being limited to 3.5 MB; webhook 500,000, Segment's batch
    # limit; OTLP 4,000,000). Content logging makes records big: 128 with 8,192 characters each way pass 4 MB.
    max_batch_bytes: int | None = None
    flush_interval_ms: int = 1000  # a partial batch waits at most this long
    queue_size: int = 10_000  # records in memory; beyond, they go to the spool (or are dropped without one)
    timeout_s: float = 10.0
    max_backoff_s: float = 30.0  # retries back off exponentially, with jitter, up to this
    spool_max_mb: float = 256.0  # the disk spool's cap; 0: no spool (records beyond the queue are dropped)


@dataclass(frozen=True, slots=True)
class ContentConfig:
    """What of a request's prompt and answer its record keeps. Per project through the `content_logging` flag."""

    mode: ContentMode = "off"  # off | redacted (PII replaced by [EMAIL], [PHONE]...) | full
    max_chars: int = 8192  # each of input and output, truncated beyond


@dataclass(frozen=True, slots=True)
class FeaturesConfig:
    """Feature flags (gateway/flags.py): a value per flag, overridden per project, and both again
    through the API (/api/v1/features). Flags: cost_tracking, similarity, content_logging (off|redacted|full),
    cache (off|exact|semantic),
    sink.<name>, guardrail.<check>."""

    defaults: dict[str, FlagValue] = field(default_factory=dict)
    projects: dict[str, dict[str, FlagValue]] = field(default_factory=dict)
    poll_interval_s: float = 2.0  # how often each worker reads the API's overrides from the store


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    store: str = field(default="sqlite:///gateway.db", repr=False)
    queue_size: int = 100_000
    batch_size: int = 1000
    flush_interval_ms: int = 200
    pricing_file: str = "config/pricing.yaml"
    tiktoken_cache_dir: str = ""
    # Days to keep, per table (model_cost_logs, event_logs); a table not named is kept for ever.
    retention_days: dict[str, float] = field(default_factory=dict)
    maintenance_interval_s: float = 3600.0  # how often retention (and PostgreSQL's day partitions) run
    sinks: dict[str, SinkConfig] = field(default_factory=dict)
    # Where the store and each sink spool records while they are down (<spool_dir>/<name>); "" disables spooling.
    spool_dir: str = "spool"
    store_spool_max_mb: float = 1024.0
    store_max_backoff_s: float = 30.0  # the store's retries back off exponentially, with jitter, up to this
    # A write to the store (or its event log) in flight longer than this has failed: the store is `stalled`, and
    # what waits for it goes to the spool.
    write_timeout_s: float = 2.0
    # Any other call to a PostgreSQL store (a virtual key's lookup, a trace query, a policy or flag poll, an admin
    # change) with no answer within this long has failed: a hung server fails what waits on it instead of holding it.
    query_timeout_s: float = 5.0
    # A record that has waited this long in memory for the store (a slow or hung write ahead of it) goes to the
    # spool, with everything behind it: about what a kill -9 can lose (see the README's "Nothing lost").
    spill_after_ms: int = 1000
    # Each sink's dead-letter file (<spool_dir>/<name>/dead-letter.jsonl): the records it refused for good.
    dead_letter_max_mb: float = 64.0
    content: ContentConfig = field(default_factory=ContentConfig)


@dataclass(frozen=True, slots=True)
class SimilarityConfig:
    enabled: bool = False  # embed each prompt off the request path and log its nearest earlier prompts
    window: int = 2000  # recent prompts kept per project to compare with
    k: int = 5  # nearest matches logged
    near_duplicate_threshold: float = 0.92  # cosine at and above which a prompt counts as a near duplicate
    max_projects: int = 32  # projects with a window in memory (least recently used dropped)
    queue_size: int = 10_000  # prompts waiting; beyond, dropped and counted
    max_chars: int = 4000  # prompt text compared, at most
    # A model group of this gateway that serves embeddings: prompts are embedded by it, in batches, through the
    # router. Empty: the built-in local embedding (hashed word and character n-grams; no download, no network).
    embedding_model: str = ""


def flag_problem(flag: str, value: Any, sinks: Iterable[str]) -> str | None:
    """Why `flag` cannot take `value` (None if it can): an unknown flag, or a value of the wrong kind."""
    if flag == "content_logging":
        return None if value in CONTENT_MODES else f"must be one of {', '.join(CONTENT_MODES)}"
    if flag == "cache":
        return None if value in CACHE_MODES else f"must be one of {', '.join(CACHE_MODES)}"
    known = flag in BOOLEAN_FLAGS
    if flag.startswith("sink."):
        known = flag.removeprefix("sink.") in set(sinks)
    elif flag.startswith("guardrail."):
        known = flag.removeprefix("guardrail.") in GUARDRAIL_SETTINGS
    if not known:
        names = sorted([*BOOLEAN_FLAGS, "content_logging", "cache", *(f"sink.{s}" for s in sinks)])
        names += [f"guardrail.{c}" for c in sorted(GUARDRAIL_SETTINGS)]
        return f"unknown flag (known: {', '.join(names)})"
    return None if isinstance(value, bool) else "must be true or false"


def _check_sink_target(sink: SinkConfig, path: str, problems: list[tuple[str, str]]) -> None:
    """Where a sink posts, and as whom: url, or for a webhook data_plane_url with write_key (RudderStack, Segment)."""
    http = ("http://", "https://")
    if sink.type != "webhook":
        for key in ("write_key", "data_plane_url"):
            if getattr(sink, key):
                problems.append((f"{path}.{key}", "only a webhook sink takes it (RudderStack, Segment)"))
    elif sink.write_key or sink.data_plane_url:
        if not sink.data_plane_url:
            problems.append((path, "write_key needs data_plane_url (RudderStack's data plane, https://api.segment.io)"))
        elif not sink.write_key:
            problems.append((path, "data_plane_url needs write_key (the source's write key, from the environment)"))
        elif not sink.data_plane_url.startswith(http):
            problems.append((f"{path}.data_plane_url", "must be an http:// or https:// URL"))
        elif (plane := urlsplit(sink.data_plane_url)).query or plane.fragment:
            problems.append((f"{path}.data_plane_url", "the data plane's base URL, without ?query or #fragment"))
        elif plane.path.rstrip("/").endswith("/v1/batch"):
            # Posted to <data_plane_url>/v1/batch: this one would go to .../v1/batch/v1/batch, a 404, every record
            # in the dead letters.
            problems.append((f"{path}.data_plane_url", "the data plane's base URL: leave /v1/batch out"))
        if sink.data_plane_url and sink.url:
            problems.append((path, "url or data_plane_url, not both (batches go to <data_plane_url>/v1/batch)"))
        if sink.write_key and any(h.lower() == "authorization" for h in sink.headers):
            problems.append((f"{path}.headers", "the write key makes the authorization header: leave it out"))
        return
    if not sink.url.startswith(http):
        problems.append((f"{path}.url", "must be an http:// or https:// URL"))


def store_problem(url: str) -> str | None:
    """What is wrong with telemetry.store, found without connecting (a scheme, a port, a schema name), so that
    `gateway check` names it rather than the store failing with a traceback when it opens. Never the URL itself:
    it holds the password."""
    if url in ("", "none") or url.startswith("sqlite://"):
        return None
    if not url.startswith(("postgres://", "postgresql://")):
        return "supported: sqlite:///path, postgresql://user@host:5432/db, or none"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed only to be refused here, not when the store opens
    except ValueError:  # not its message: some name the host and password part
        return "its host and port cannot be read (a port is a number from 1 to 65535, an IPv6 address in [...])"
    schemas = [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "schema"]
    if schemas and not STORE_SCHEMA.fullmatch(schemas[-1]):
        return "?schema=: lower-case letters, digits and _ only (at most 63)"
    return None


def check_telemetry(config: GatewayConfig, problems: list[tuple[str, str]]) -> None:
    telemetry = config.telemetry
    for name, sink in telemetry.sinks.items():
        path = f"telemetry.sinks.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            problems.append((path, "a sink's name is letters, digits, _ and - (it names its spool folder)"))
        elif name in ("store", "tail", "access_log", "event_log", "events_webhook"):
            problems.append((path, f"{name!r} is the name of a built-in sink (and of its spool folder)"))
        _check_sink_target(sink, path, problems)
        if sink.type == "langfuse" and not (sink.public_key and sink.secret_key):
            problems.append((path, "a langfuse sink needs public_key and secret_key"))
        for key in ("batch_size", "queue_size", "flush_interval_ms"):
            if getattr(sink, key) <= 0:
                problems.append((f"{path}.{key}", "must be positive"))
        if sink.max_batch_bytes is not None and sink.max_batch_bytes < 1024:
            problems.append((f"{path}.max_batch_bytes", "must be at least 1024"))
        if sink.spool_max_mb < 0:
            problems.append((f"{path}.spool_max_mb", "must not be negative"))
    model = config.similarity.embedding_model
    if model and model not in config.models:
        problems.append(("similarity.embedding_model", f"unknown model {model!r}"))
    for key in (
        "write_timeout_s",
        "query_timeout_s",
        "spill_after_ms",
        "flush_interval_ms",
        "batch_size",
        "queue_size",
    ):
        if getattr(telemetry, key) <= 0:
            problems.append((f"telemetry.{key}", "must be positive"))
    if telemetry.dead_letter_max_mb < 0:
        problems.append(("telemetry.dead_letter_max_mb", "must not be negative"))
    if telemetry.content.max_chars <= 0:
        problems.append(("telemetry.content.max_chars", "must be positive"))
    features = config.features
    if features.poll_interval_s <= 0:
        problems.append(("features.poll_interval_s", "must be positive"))
    scopes = [("features.defaults", features.defaults)]
    scopes += [(f"features.projects.{p}", values) for p, values in features.projects.items()]
    for path, values in scopes:
        for flag, value in values.items():
            problem = flag_problem(flag, value, telemetry.sinks)
            if problem:
                problems.append((f"{path}.{flag}", problem))
