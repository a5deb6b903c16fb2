"""What a record keeps of a request's prompt and answer: nothing, the text with PII replaced, or the text.

Built by the telemetry writer, off the request path (redaction runs regular expressions over the whole text); the
mode is the project's `content_logging` flag (gateway/flags.py), the size `telemetry.content.max_chars`
for each of input and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import orjson

from gateway.guardrails.pii import PiiDetector
from gateway.guardrails.text import answer_slots, prompt_slots

_TRUNCATED = "…[truncated]"
# Redaction runs a dozen regular expressions over a text. Prompts and answers repeat exactly more often than not
# (templates, retries: what the similarity report's exact duplicates count), so a repeat's redaction is looked up;
# only texts up to this size, so that the cache stays within 1,024 x 2 x 8,192 characters (a text and its redaction:
# 16 MB of ASCII, up to four times that of characters beyond the BMP).
_CACHED_MAX_CHARS = 8192
_CACHED_TEXTS = 1024


def input_text(endpoint: str, body: object) -> str:
    """Every text of the request, one line per message prefixed by its role (`user: ...`)."""
    return "\n".join(f"{slot.role}: {slot.text}" for slot in prompt_slots(endpoint, body, every_role=True))


def output_text(response_body: bytes | None, streamed: Sequence[str] | None) -> str:
    """The answer's text: the streamed pieces, or the whole answer's choices."""
    if streamed:
        return "".join(streamed)
    if not response_body:
        return ""
    try:
        answer = orjson.loads(response_body)
    except orjson.JSONDecodeError:
        return ""
    return "\n".join(slot.text for slot in answer_slots(answer)) if isinstance(answer, dict) else ""


class ContentLogger:
    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._detector: PiiDetector | None = None  # built on first use: only `redacted` needs it
        self._redact_cached = lru_cache(maxsize=_CACHED_TEXTS)(self._redact)

    def render(self, mode: str, text: str) -> str:
        if mode == "off" or not text:
            return ""
        if mode == "redacted":
            # Redact before truncating, so that a secret cut in half at the limit is still found whole.
            text = self._redact_cached(text) if len(text) <= _CACHED_MAX_CHARS else self._redact(text)
        if len(text) > self.max_chars:
            return text[: self.max_chars] + _TRUNCATED
        return text

    def _redact(self, text: str) -> str:
        if self._detector is None:
            self._detector = PiiDetector()
        return self._detector.redact(text)
