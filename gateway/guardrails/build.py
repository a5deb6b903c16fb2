"""build_check: one guardrail check from a policy's settings. The one place that knows each check's settings, so
that a policy naming a setting that does not exist is refused when it loads, not when a request arrives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.config.guardrails import GUARDRAIL_SETTINGS
from gateway.guardrails.base import CheckResult


class Check(Protocol):
    def check(self, text: str) -> CheckResult: ...


@dataclass(slots=True)
class CheckEnv:
    """What checks share: the token counter, the known abuse prompts and the embedding built once for them."""

    count_tokens: Callable[[str], int] | None = None
    abuse_prompts: Sequence[str] = ()
    abuse_cache: dict[tuple[float, float], Check] = field(default_factory=dict)


def load_prompts(path: str | Path) -> list[str]:
    """Known abuse prompts from a file: one a line, blank lines and lines starting with `#` skipped. Here, not in
    abuse.py: reading them must not import numpy (some 15 MB) for a gateway whose policies use no abuse check."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def check_settings(name: str, settings: Mapping[str, Any]) -> list[str]:
    """Problems with a check's settings (unknown names); values are checked by building it."""
    known = GUARDRAIL_SETTINGS.get(name)
    if known is None:
        return [f"unknown check {name!r}"]
    return [f"unknown setting {key!r} for {name} (known: {', '.join(sorted(known))})" for key in settings
            if key not in known]  # fmt: skip


def build_check(name: str, settings: Mapping[str, Any], env: CheckEnv) -> Check:
    """Raises ValueError (with a message fit for a policy problem) on a bad setting."""
    problems = check_settings(name, settings)
    if problems:
        raise ValueError("; ".join(problems))
    try:
        return _build(name, settings, env)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _build(name: str, s: Mapping[str, Any], env: CheckEnv) -> Check:
    if name == "length":
        return _length(s, env)
    if name == "pii":
        from gateway.guardrails.pii import PII_TYPES, PiiDetector

        types = s.get("types", PII_TYPES)
        unknown = set(types) - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown pii types {sorted(unknown)} (known: {', '.join(PII_TYPES)})")
        if "entropy_threshold" in s:
            return PiiDetector(types, entropy_threshold=float(s["entropy_threshold"]))
        return PiiDetector(types)
    if name == "injection":
        from gateway.guardrails.injection import InjectionCheck

        return InjectionCheck(threshold=float(s.get("threshold", 0.5)))
    if name == "abuse":
        threshold, similarity = float(s.get("threshold", 0.5)), float(s.get("similarity_threshold", 0.8))
        cached = env.abuse_cache.get((threshold, similarity))
        if cached is None:
            from gateway.guardrails.abuse import AbuseCheck
            from gateway.similarity.embedding import LocalEmbedding

            cached = AbuseCheck(
                threshold=threshold,
                known_prompts=env.abuse_prompts,
                embedding=LocalEmbedding(),
                similarity_threshold=similarity,
            )
            env.abuse_cache[(threshold, similarity)] = cached
        return cached
    if name == "keywords":
        from gateway.guardrails.keywords import KeywordCheck

        return KeywordCheck(
            deny=list(s.get("deny", ())), topics=dict(s.get("topics", {})), whole_words=bool(s.get("whole_words", True))
        )
    if name == "json_schema":
        from gateway.guardrails.json_schema import JsonSchemaCheck

        schema = s.get("schema")
        if schema is None:
            raise ValueError("json_schema: no schema to build from (the request's own is used per request)")
        return JsonSchemaCheck(schema)
    raise ValueError(f"unknown check {name!r}")


def _length(s: Mapping[str, Any], env: CheckEnv) -> Check:
    from gateway.guardrails.length import LengthCheck

    max_chars, max_tokens = s.get("max_chars", 0), s.get("max_tokens", 0)
    if not (isinstance(max_chars, int) and isinstance(max_tokens, int)) or max_chars < 0 or max_tokens < 0:
        raise ValueError("max_chars and max_tokens must be integers of at least 0")
    return LengthCheck(max_chars=max_chars, max_tokens=max_tokens, count_tokens=env.count_tokens)
