"""The settings each guardrail check takes, by name: data of the config (policies and the `guardrail.<check>` flags
name checks), read by gateway/guardrails/build.py, the one place that builds checks from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GuardrailsConfig:
    stream_holdback_chars: int = 64  # streamed answers: text held back so that a match split across chunks is seen
    abuse_prompts_file: str = "config/abuse_prompts.txt"  # known abuse prompts for the `abuse` check
    # The largest response_format schema (its JSON) the json_schema check takes; a larger one is refused (400) where
    # the check applies. Checking a new schema costs some 10 µs of CPU a byte (on a worker thread).
    json_schema_max_kb: float = 32.0


GUARDRAIL_SETTINGS: Mapping[str, frozenset[str]] = {
    "length": frozenset({"max_chars", "max_tokens"}),
    "pii": frozenset({"types", "entropy_threshold"}),
    "injection": frozenset({"threshold"}),
    "abuse": frozenset({"threshold", "similarity_threshold"}),
    "keywords": frozenset({"deny", "topics", "whole_words"}),
    "json_schema": frozenset({"schema"}),
}
