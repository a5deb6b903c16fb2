"""Anthropic's errors as the gateway's: an error answer as UpstreamRejected, an error object (of an answer or a
stream's error event) as OpenAI's."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamRejected

# Anthropic's error types -> OpenAI's, where they differ.
_ERROR_TYPES = {
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "overloaded_error": "server_error",
    "billing_error": "insufficient_quota",
}


def openai_error(error: Any) -> dict[str, Any]:
    """Anthropic's `error` object ({type, message}) as OpenAI's ({message, type, param, code})."""
    info = error if isinstance(error, dict) else {}
    raw_type, raw_message = info.get("type"), info.get("message")
    kind = raw_type if isinstance(raw_type, str) else "api_error"
    message = raw_message if isinstance(raw_message, str) else ""
    lowered = message.lower()
    code: str | None = None
    param: str | None = None
    if "prompt is too long" in lowered or "exceed context limit" in lowered or "context window" in lowered:
        code, param = "context_length_exceeded", "messages"
    elif "content filtering policy" in lowered:
        code = "content_policy_violation"
    elif kind == "not_found_error" and lowered.startswith("model:"):
        code, param = "model_not_found", "model"
    elif kind == "rate_limit_error":
        code = "rate_limit_exceeded"
    elif kind == "billing_error":
        code = "insufficient_quota"
    return {"message": message, "type": _ERROR_TYPES.get(kind, kind), "param": param, "code": code}


def rejected(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamRejected:
    """An Anthropic error answer as the gateway's error. 529 (overloaded) becomes 503: the OpenAI SDK and the
    gateway's router retry a 503, while 529 means nothing to either."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    status = 503 if status == 529 else status
    if not isinstance(error, dict):
        # Not Anthropic's JSON (a proxy's HTML page, say): the status alone speaks.
        message = f"The upstream provider {provider!r} answered {status}."
        return UpstreamRejected(message, status=status, provider=provider, retry_after=retry_after)
    info = openai_error(error)
    return UpstreamRejected(
        info["message"] or f"The upstream provider {provider!r} answered {status}.",
        status=status,
        provider=provider,
        error_type=info["type"],
        code=info["code"],
        param=info["param"],
        retry_after=retry_after,
    )
