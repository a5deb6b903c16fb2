"""Gemini's errors as the gateway's: an error answer as UpstreamRejected, Google's error object as OpenAI's, and an
answer of a shape Google never sends as a 502."""

from __future__ import annotations

import contextlib
import math
import re
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.errors import UpstreamRejected, UpstreamUnavailable

# "The input token count (N) exceeds the maximum number of tokens allowed (M)." (Google AI), "...the input token
# count is N but model only supports up to M." (Vertex AI)
_CONTEXT_LENGTH = re.compile(r"input token count.*(exceeds|only supports up to)", re.IGNORECASE | re.DOTALL)


def openai_error(error: Any, status: int) -> tuple[int, dict[str, Any], str | None]:
    """Google's error object ({code, message, status, details}) as (HTTP status, OpenAI's error object, the
    Retry-After that Google's RetryInfo asks for)."""
    info = error if isinstance(error, dict) else {}
    message = str(info.get("message") or "")  # never `details`: its DebugInfo may quote the key
    kind = info.get("status")
    details = [d for d in info.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details}
    error_type: str | None = None
    code: str | None = None
    param: str | None = None
    if _CONTEXT_LENGTH.search(message):
        code, param = "context_length_exceeded", "messages"
    elif kind == "RESOURCE_EXHAUSTED":
        status, error_type, code = 429, "rate_limit_error", "rate_limit_exceeded"
    elif "API_KEY_INVALID" in reasons or kind == "UNAUTHENTICATED":
        # Google answers a bad key with 400: say 401, as an OpenAI upstream would, so that it reads as what it is.
        status, error_type, code = 401, "authentication_error", "invalid_api_key"
    elif kind == "PERMISSION_DENIED":
        error_type = "permission_error"
    elif kind == "NOT_FOUND" and "models/" in message:
        code, param = "model_not_found", "model"
    if error_type is None:
        error_type = "invalid_request_error" if 400 <= status < 500 else "api_error"
    retry_after = next((_seconds(d.get("retryDelay")) for d in details if "retryDelay" in d), None)
    return status, {"message": message, "type": error_type, "param": param, "code": code}, retry_after


def _seconds(delay: Any) -> str | None:
    """A google.protobuf.Duration in JSON ("37s", "0.5s") as Retry-After's whole seconds."""
    if not isinstance(delay, str) or not delay.endswith("s"):
        return None
    try:
        return str(max(1, math.ceil(float(delay[:-1]))))
    except ValueError:
        return None


def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
    """A Gemini error answer as the gateway's error, its status and Google's message kept."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:  # streamGenerateContent wraps its errors in an array
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        # Not Google's JSON (a proxy's HTML page, say): the status alone speaks.
        message = f"The upstream provider {provider!r} answered {status}."
        return UpstreamRejected(message, status=status, provider=provider, retry_after=retry_after)
    status, info, google_retry_after = openai_error(error, status)
    return UpstreamRejected(
        info["message"] or f"The upstream provider {provider!r} answered {status}.",
        status=status,
        provider=provider,
        error_type=info["type"],
        code=info["code"],
        param=info["param"],
        retry_after=retry_after or google_retry_after,
    )


def malformed(provider: str, what: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"The upstream provider {provider!r} answered with {what}.", provider=provider, code="invalid_upstream_response"
    )


@contextlib.contextmanager
def unreadable_as_malformed(provider: str) -> Iterator[None]:
    """An answer whose fields have types Google never sends is the upstream's fault, a 502: send() raises only
    UpstreamError, and the translations need not check the type of every field they read."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError, struct.error) as exc:
        raise malformed(provider, f"an answer of an unexpected shape ({type(exc).__name__})") from exc
