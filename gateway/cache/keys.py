"""What identifies a cached answer: the exact key, the semantic scope, and whether a request may use the cache.

The exact key is a digest of everything that changes the answer: the project (two projects never share an entry),
the endpoint and ingress API, the model group that serves it, and the canonical request body without the fields
that only change how the answer is delivered or logged (stream, stream_options, user, metadata, store...). JSON
keys are sorted, so that two bodies that differ only in the order of their keys share an entry.

The semantic scope is the same digest with the last user turn's text left out: two requests in one scope differ
only in the wording of that turn, which the semantic index compares.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson

from gateway.types import Headers

# The endpoints whose answers are cached (RequestContext.endpoint; the Responses and Messages ingresses serve
# theirs as chat/completions, their API kept apart in the key).
CACHEABLE = frozenset({"chat/completions", "completions", "embeddings"})
# Fields that do not change the answer: how it is delivered (stream), who asked (user, safety_identifier), what is
# logged or kept beside it (metadata, store), and hints to the provider's own prompt cache.
_DELIVERY_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)
_KEY_OPTIONS = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps
# BLAKE2b with a 16-byte digest, copied for each key: a copy and an update cost less than the constructor, whose
# keyword argument is parsed on every call. The same digest (the key of an entry kept before stays its key).
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)

# What a request asks of the cache, from its headers: use it (read and write), refresh it (no-cache: do not serve
# from it, but keep the fresh answer) or skip it (no-store: neither).
Control = Literal["use", "refresh", "skip"]
GATEWAY_HEADER = b"x-gateway-cache"  # the gateway's own request header: bypass | no-store | no-cache
CONTROL_HEADERS = frozenset({b"cache-control", GATEWAY_HEADER})  # the request headers request_control reads


def exact_key(project: str, endpoint: str, api: str, model: str, body: dict[str, Any]) -> str | None:
    """The exact key (32 hex digits); None when the body cannot be encoded (nested past orjson's depth)."""
    if not _DELIVERY_FIELDS.isdisjoint(body):  # most bodies have none: hashed as they are, without a copy
        body = {name: value for name, value in body.items() if name not in _DELIVERY_FIELDS}
    # _digest, written out: once per request of a project whose cache is on.
    try:
        payload = _dumps([project, endpoint, api, model, body], option=_KEY_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    digest = _BLAKE2B_16.copy()
    digest.update(payload)
    return digest.hexdigest()


def semantic_parts(project: str, endpoint: str, api: str, model: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """(scope, text) for the semantic index: `text` is the last message's text when it is a user turn of text
    alone, `scope` the digest of everything else. None for a request the semantic cache does not serve (not a
    chat, no user turn last, images or other parts in it)."""
    if endpoint != "chat/completions":
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = _text_of(last.get("content"))
    if not text:
        return None
    fields = {name: value for name, value in body.items() if name not in _DELIVERY_FIELDS}
    fields["model"] = model
    fields["messages"] = [*messages[:-1], {k: v for k, v in last.items() if k != "content"}]
    scope = _digest(["semantic", project, endpoint, api, fields])
    return (scope, text) if scope is not None else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return ""  # an image, a file, audio: not the same question in other words
        texts.append(part["text"])
    return "\n".join(texts)


def _digest(value: Any) -> str | None:
    try:
        payload = _dumps(value, option=_KEY_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    digest = _BLAKE2B_16.copy()
    digest.update(payload)
    return digest.hexdigest()


def deterministic(endpoint: str, body: dict[str, Any]) -> bool:
    """Whether the request asks for a deterministic answer: temperature 0, or a seed. Embeddings always are."""
    if endpoint == "embeddings":
        return True
    temperature = body.get("temperature")
    if temperature is not None and type(temperature) is not bool and temperature == 0:
        return True
    seed = body.get("seed")
    return type(seed) is int


def request_control(headers: Headers) -> Control:
    """What the request's headers ask of the cache: `Cache-Control: no-store` or the gateway's header `bypass` /
    `no-store` skip it; `Cache-Control: no-cache` (or the gateway's `no-cache`) refreshes it."""
    control: Control = "use"
    for name, value in headers:
        if name not in CONTROL_HEADERS:  # as nearly every header is: one set lookup each
            continue
        if name == b"cache-control":
            directives = {d.strip() for d in value.lower().split(b",")}
            if b"no-store" in directives:
                return "skip"
            if b"no-cache" in directives:
                control = "refresh"
        elif name == GATEWAY_HEADER:
            value = value.strip().lower()
            if value in (b"bypass", b"no-store", b"off"):
                return "skip"
            if value in (b"no-cache", b"refresh"):
                control = "refresh"
    return control
