"""RequestContext: everything one request carries through the pipeline, and its record when it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

import orjson

from gateway.decision import RouteConstraints
from gateway.tracecontext import incoming

if TYPE_CHECKING:
    from gateway.config import Deployment, ModelGroup
    from gateway.decision import Decision
    from gateway.errors import GatewayError
    from gateway.state.limiter import Reservation

T = TypeVar("T")

__all__ = [
    "ANONYMOUS",
    "CacheOutcome",
    "NativeRequest",
    "Principal",
    "RequestContext",
    "RouteConstraints",
    "Span",
    "Usage",
    "Watched",
]


@dataclass(slots=True)
class Principal:
    """Who is calling. The identity issue grows this; filters and records read it."""

    name: str
    key_id: str = ""
    project: str = "default"
    team: str = ""
    user: str = ""
    role: str = "developer"
    metadata: dict[str, str] = field(default_factory=dict)
    # Set by virtual keys (and read by ratelimit): empty or 0 means no limit of the key's own.
    allowed_models: frozenset[str] = frozenset()
    rpm: int = 0
    tpm: int = 0
    budget_usd: float = 0.0
    budget_period: str = "month"
    expires_at: float = 0.0  # epoch seconds; 0: never
    source: str = "config"  # config | virtual | jwt | anonymous


ANONYMOUS = Principal(name="anonymous", role="developer")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    # "upstream" when the provider reported it, "tiktoken" or "estimate" when the gateway counted it.
    source: str = "upstream"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any]) -> Usage:
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )


class Span(NamedTuple):
    """A stage's or a routing attempt's time. A tuple made by tuple.__new__: one a stage on every request, where a
    dataclass's __init__ (or a NamedTuple's __new__) is a Python frame each."""

    name: str
    start_ns: int  # from the start of the request
    duration_ns: int


_new_tuple = tuple.__new__


@dataclass(slots=True)
class NativeRequest:
    """A request an ingress took in an API that some providers speak themselves (OpenAI's Responses API), kept
    beside its chat translation: `body`, in that API, for a provider that speaks `api`. Such a provider leaves the
    whole answer it got in `answer` and the chat completion made of it, the bytes the pipeline saw, in `chat`: the
    ingress sends `answer` while the reply's body is still those bytes (no filter changed it)."""

    api: str
    body: dict[str, Any]
    answer: dict[str, Any] | None = None
    chat: bytes | None = None


@dataclass(slots=True)
class CacheOutcome:
    """What the response cache did for a request (set by the cache filter; read by ratelimit, the record and the
    answer's `x-gateway-cache` header). `status`: hit, semantic-hit, miss or bypass."""

    status: str
    key: str = ""  # the exact key's digest (hex); on a semantic hit, the key of the entry served
    served_id: str = ""  # on a hit: the id of the record whose answer was served
    score: float | None = None  # on a semantic hit: the similarity of the two requests' last user turns
    saved_usd: float | None = None  # on a hit: what the upstream call would have cost

    @property
    def hit(self) -> bool:
        return self.status in ("hit", "semantic-hit")


class Watched(Protocol):
    """The request's watch on its client (gateway/api/watch.py), as the router sees it."""

    async def confirm(self) -> None:
        """Before more is spent on the request (a retry, a fallback): raise CancelledError if its client left."""


class RequestContext:
    """Created by the endpoint handler when a request arrives; filters share state only through it."""

    __slots__ = (
        "request_id",
        "client_request_id",
        "endpoint",
        "started_at",
        "started_ns",
        "headers",
        "client_ip",
        "raw_body",
        "body",
        "body_changed",
        "metadata",
        "model",
        "stream",
        "client_wants_usage",
        "principal",
        "group",
        "deployment",
        "provider",
        "served_model",
        "usage",
        "cost_usd",
        "status",
        "error",
        "spans",
        "upstream_start_ns",
        "upstream_connect",
        "upstream_headers_ns",
        "first_token_ns",
        "upstream_end_ns",
        "finished_ns",
        "tags",
        "completion_text",
        "response_body",
        "attempts",
        "route_reason",
        "constraints",
        "open_stream",
        "limit_headers",
        "limit_reservation",
        "policy",
        "guardrails",
        "_state",
        "watch",
        "native",
        "cache",
        "_trace",
    )

    def __init__(
        self,
        *,
        request_id: str,
        endpoint: str,
        headers: list[tuple[bytes, bytes]],
        raw_body: bytes,
        body: dict[str, Any],
        client_ip: str = "",
        started_ns: int | None = None,
        client_request_id: str = "",
    ) -> None:
        self.request_id = request_id  # the gateway's own (gateway/ids.py): the record's id
        self.client_request_id = client_request_id  # the client's X-Request-ID, when sane; "" when it sent none
        self.endpoint = endpoint
        self.started_at = time.time()
        self.started_ns = started_ns if started_ns is not None else time.perf_counter_ns()
        self.headers = headers
        self.client_ip = client_ip
        self.body_changed = False
        # The request's own `metadata` when its ingress reads it from a body the canonical one does not carry (the
        # Responses API's: a chat body sent upstream must not have it); None: the canonical body's `metadata`.
        self.metadata: dict[str, Any] | None = None
        if body:
            self.set_body(raw_body, body)
        else:  # an endpoint's context, made before the body is read (set_body's values for an empty one)
            self.raw_body = raw_body
            self.body = body
            self.model: str = ""
            self.stream: bool = False
            self.client_wants_usage = False
        self.principal: Principal = ANONYMOUS
        self.group: ModelGroup | None = None
        self.deployment: Deployment | None = None
        self.provider = ""
        self.served_model = ""
        self.usage: Usage | None = None
        self.cost_usd: float | None = None
        self.status = 0
        self.error: GatewayError | None = None
        self.spans: list[Span] = []
        self.upstream_start_ns = 0
        # (start, end) in perf_counter ns of the last upstream connection opened for this request (DNS, TCP, TLS);
        # None when every attempt found one open in the pool.
        self.upstream_connect: tuple[int, int] | None = None
        self.upstream_headers_ns = 0
        self.first_token_ns = 0
        self.upstream_end_ns = 0
        self.finished_ns = 0
        self.tags: dict[str, str] = {}
        # Pieces of a streamed answer, kept only when the upstream sends no usage, to count them later.
        self.completion_text: list[str] | None = None
        self.response_body: bytes | None = None  # the whole answer sent (not streamed), for content logging
        self.attempts = 0  # upstream attempts made, retries and fallbacks included
        self.route_reason = ""  # why the router chose the deployment that served
        self.constraints: RouteConstraints | None = None  # set by a policy or the request's headers
        self.open_stream = False  # the router's stream whose end it has yet to account for
        # Set by ratelimit: the x-ratelimit-* headers of every answer a limit applied to, and what it reserved.
        self.limit_headers: list[tuple[bytes, bytes]] | None = None
        self.limit_reservation: Reservation | None = None
        # Set by the policy filter when a policy matched; read by ratelimit, guardrails, route and the record.
        self.policy: Decision | None = None
        # Set by the guardrails filter: what each check found, as plain dicts (types and positions, never text).
        self.guardrails: list[dict[str, Any]] | None = None
        # What a filter keeps for its later hooks, by type (`state`, `keep`): made only when one keeps something.
        self._state: dict[type[Any], Any] | None = None
        self.watch: Watched | None = None  # set by the endpoint once the body is read
        # Set by an ingress whose API some providers speak themselves (the Responses API): see NativeRequest.
        self.native: NativeRequest | None = None
        self.cache: CacheOutcome | None = None  # set by the cache filter when the project's cache is on
        self._trace: tuple[str, str] | None = None

    def note_requested(self, body: dict[str, Any]) -> None:
        """What a JSON body asks for, before it is checked, so that the record of a body refused by validation
        still says it: the model as text whatever its JSON type (a dict or a number is written as its JSON)."""
        model = body.get("model", "")
        if type(model) is not str:
            model = orjson.dumps(model).decode()[:256]
        self.model = model
        self.stream = body.get("stream") is True

    def set_body(self, raw_body: bytes, body: dict[str, Any]) -> None:
        """The request's body, once read and parsed: an endpoint makes the context before, so that a request
        refused on its headers alone (no key) is recorded without its body ever being read."""
        self.raw_body = raw_body
        self.body = body
        self.model = body.get("model", "")
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True

    @property
    def trace_id(self) -> str:
        """The W3C trace this request belongs to: the client's (traceparent), else its own (the record id)."""
        return self.trace_context()[0]

    @property
    def parent_span_id(self) -> str:
        """The client's span that made this request, from its traceparent; "" when it sent none."""
        return self.trace_context()[1]

    def trace_context(self) -> tuple[str, str]:
        """(trace_id, parent_span_id) at once: the record reads both."""
        # Read from the headers once, when first needed (every record needs it). `incoming` is imported with the
        # module: an import statement run per request cost ~8,800 instructions, the module already loaded.
        if self._trace is None:
            trace, parent = incoming(self.headers)
            self._trace = (trace or self.request_id, parent)
        return self._trace

    def state(self, kind: type[T]) -> T | None:
        """The state of this type that a filter kept for the request (the guardrails' stream guard); None if none.
        Typed by its key: a filter's own types stay in its own layer, the context imports none of them."""
        found = self._state
        return cast("T | None", found.get(kind)) if found is not None else None

    def keep(self, value: object) -> None:
        """Keep a filter's per-request state, found again with `state(type(value))`."""
        if self._state is None:
            self._state = {}
        self._state[type(value)] = value

    def request_metadata(self) -> Any:
        """The request's `metadata` as the client sent it (policies match on it, the record keeps it)."""
        return self.body.get("metadata") if self.metadata is None else self.metadata

    def header(self, name: bytes) -> str | None:
        """A request header by its lower-case name."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def set_field(self, key: str, value: Any) -> None:
        """Change the request body; the upstream then gets it re-serialised instead of the original bytes."""
        self.body[key] = value
        self.body_changed = True

    def add_span(self, name: str, start_ns: int, end_ns: int | None = None) -> None:
        end = end_ns if end_ns is not None else time.perf_counter_ns()
        self.spans.append(_new_tuple(Span, (name, start_ns - self.started_ns, end - start_ns)))

    @property
    def upstream_ns(self) -> int:
        # Comparisons, not max(): it costs a call with keyword parsing, read several times per request.
        start = self.upstream_start_ns
        if not start:
            return 0
        end = self.upstream_end_ns or self.upstream_headers_ns
        return end - start if end > start else 0

    @property
    def total_ns(self) -> int:
        return (self.finished_ns or time.perf_counter_ns()) - self.started_ns

    def overhead_ns(self, now_ns: int | None = None) -> int:
        """The gateway's own time: everything but the wait for the upstream."""
        end = now_ns or self.finished_ns or time.perf_counter_ns()
        spent = end - self.started_ns - self.upstream_ns
        return spent if spent > 0 else 0
