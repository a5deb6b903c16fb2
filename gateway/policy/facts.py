"""Facts: the few values about one request that policies may test, gathered once before evaluation.

Policies never see the request itself: only these fields. That keeps evaluation cheap (no body walking per
policy) and keeps what a policy can depend on small and documented.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.context import Principal

# The gateway's endpoint names (ctx.endpoint) spelled as a policy writes them.
_ENDPOINTS = {
    "chat/completions": "chat",
    "chat": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "messages": "messages",
}


@dataclass(slots=True)
class Facts:
    model: str = ""
    endpoint: str = "chat"
    key: str = ""  # the principal's key id
    key_name: str = ""
    team: str = ""
    project: str = ""
    user: str = ""
    role: str = ""
    plan: str = ""  # the principal's metadata "plan"
    region: str = ""  # the principal's metadata "region"
    stream: bool = False
    has_tools: bool = False
    tokens: int = 0  # the prompt's token estimate; 0 unless some policy reads it (PolicySet.needs_tokens)
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Counts `tokens` the first time a condition reads them: most requests never reach a token condition (its
    # policy's plan or model does not match first), and counting costs more than evaluating every policy.
    count_tokens: Callable[[], int] | None = field(default=None, repr=False, compare=False)

    def prompt_tokens(self) -> int:
        count = self.count_tokens
        if count is not None:
            self.tokens = count()
            self.count_tokens = None
        return self.tokens

    @classmethod
    def from_request(
        cls,
        body: object,
        endpoint: str,
        principal: Principal,
        tokens: int = 0,
        request_metadata: Mapping[str, str] | None = None,
        count_tokens: Callable[[], int] | None = None,
    ) -> Facts:
        if not isinstance(body, Mapping):  # any JSON shape: what is not there is a default
            body = {}
        meta = principal.metadata
        if request_metadata:
            # The key's own attributes win: a client must not be able to claim another plan or region.
            merged = dict(request_metadata)
            merged.update(meta)
            meta = merged
        model = body.get("model")
        return cls(
            model=model if isinstance(model, str) else "",
            endpoint=_ENDPOINTS.get(endpoint.removeprefix("/").removeprefix("v1/"), endpoint),
            key=principal.key_id,
            key_name=principal.name,
            team=principal.team,
            project=principal.project,
            user=principal.user,
            role=principal.role,
            plan=principal.metadata.get("plan", ""),
            region=principal.metadata.get("region", ""),
            stream=body.get("stream") is True,
            has_tools=bool(body.get("tools") or body.get("functions")),
            tokens=tokens,
            metadata=meta,
            count_tokens=count_tokens,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Facts:
        """Facts from plain values (tests, explain, the admin API). Unknown names raise ValueError."""
        names = set(_NAMES)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fact(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        values = dict(data)
        if "metadata" in values:
            values["metadata"] = {str(k): str(v) for k, v in (values["metadata"] or {}).items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) if name != "metadata" else dict(self.metadata) for name in _NAMES}

    def get(self, name: str) -> Any:
        """A fact by its policy name, `metadata.<name>` included; None when the metadata key is absent."""
        if name.startswith("metadata."):
            return self.metadata.get(name[9:])
        if name == "tokens":
            return self.prompt_tokens()
        return getattr(self, name)


_NAMES = tuple(name for name in Facts.__dataclass_fields__ if name != "count_tokens")


_HEADER_PREFIX = b"x-gateway-metadata-"


def request_metadata(body: object, headers: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, str]:
    """What a request says about itself: the body's `metadata` strings, then `x-gateway-metadata-<name>` headers
    (which win). Facts.from_request puts the principal's own metadata above both."""
    out: dict[str, str] = {}
    meta = body.get("metadata") if isinstance(body, Mapping) else None
    if isinstance(meta, dict):
        out.update((str(k), v) for k, v in meta.items() if isinstance(v, str))
    for name, value in headers:
        if name.startswith(_HEADER_PREFIX) and len(name) > len(_HEADER_PREFIX):
            out[name[len(_HEADER_PREFIX) :].decode("latin-1")] = value.decode("latin-1")
    return out
