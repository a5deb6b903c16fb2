"""What the request path hands the similarity worker: the prompt's text and the item it offers. Apart from the
worker (which needs numpy, some 15 MB of a process) so that a gateway without similarity never imports it."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SimilarityItem:
    id: str  # the request id
    ts: float  # epoch seconds
    project: str
    model: str
    text: str  # what the user sent: see prompt_text()


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def prompt_text(endpoint: str, body: object, max_chars: int = 4000) -> str:
    """What the user sent, at most max_chars characters: the user messages' text joined by newlines (chat), the
    prompt (completions; the text ones of a list), the input (embeddings, responses); "" if there is none."""
    parts: list[str] = []
    if not isinstance(body, dict):
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    else:
        source = body.get("prompt") if endpoint.endswith("completions") else body.get("input", body.get("prompt"))
        if isinstance(source, str):
            parts = [source]
        elif isinstance(source, list):
            parts = [
                p if isinstance(p, str) else _content_text(p.get("content")) if isinstance(p, dict) else ""
                for p in source
            ]
    text = "\n".join(p for p in parts if p)
    return text[:max_chars]


def normalise(text: str) -> str:
    """NFKC, lower case, runs of white space as one space, trimmed: what "the same prompt" means."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def prompt_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()
