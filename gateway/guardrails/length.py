"""The length check: caps a prompt's size in characters and in tokens.

Characters are counted first because that is free (`len`); tokens only when a token cap is set, and only when the
character cap did not already trip, since tokenizing a long prompt is the costly part.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.guardrails.base import CheckResult, Finding

__all__ = ["LengthCheck"]


class LengthCheck:
    """`max_chars` and `max_tokens` are caps (0: no cap); `count_tokens` is required with a token cap."""

    name = "length"

    def __init__(
        self, max_chars: int = 0, max_tokens: int = 0, count_tokens: Callable[[str], int] | None = None
    ) -> None:
        if max_chars < 0 or max_tokens < 0:
            raise ValueError("length caps must be 0 (no cap) or positive")
        if max_tokens and count_tokens is None:
            raise ValueError("a token cap needs a token counter")
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self._count_tokens = count_tokens

    def check(self, text: str) -> CheckResult:
        size = len(text)
        if self.max_chars and size > self.max_chars:
            return self._over("chars", "characters", size, self.max_chars, size)
        if self.max_tokens and self._count_tokens is not None:
            tokens = self._count_tokens(text)
            if tokens > self.max_tokens:
                return self._over("tokens", "tokens", tokens, self.max_tokens, size)
            return CheckResult(self.name, score=_ratio(tokens, self.max_tokens))
        return CheckResult(self.name, score=_ratio(size, self.max_chars))

    def _over(self, unit: str, label: str, count: int, cap: int, size: int) -> CheckResult:
        # The finding covers what lies past the cap, as far as it can be placed: exactly for characters, the
        # whole text for tokens (where the cap falls would take a second tokenizer pass).
        start = cap if unit == "chars" else 0
        return CheckResult(
            self.name,
            score=1.0,
            findings=[Finding(f"length.{unit}", start, size)],
            triggered=True,
            message=f"prompt is {count:,} {label}; the limit is {cap:,}",
        )


def _ratio(count: int, cap: int) -> float:
    """How much of the cap is used, in 0..1 (0 with no cap), so a report can show prompts near their limit."""
    return min(count / cap, 1.0) if cap else 0.0
