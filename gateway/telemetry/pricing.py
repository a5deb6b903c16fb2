"""List prices per model, and the cost of one request's usage.

`PriceTable.load(path)` reads `config/pricing.yaml`:

    models:
      gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60}    # US dollars per million tokens

`price_for(model)` finds a model's price by its exact name; then without a provider prefix (`openai/gpt-4o`);
then by the longest known name that the model starts with, up to a `-` or `@` (`gpt-4o-2024-08-06` → `gpt-4o`,
`claude-3-5-haiku-20241022` → `claude-3-5-haiku`, `claude-3-5-haiku@20241022` → `claude-3-5-haiku`). A model with
no price gets None: the caller records it as unpriced rather than as free.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from gateway.config import ConfigError, Price
from gateway.context import Usage

__all__ = ["PriceTable", "cost_usd"]

_FIELDS = ("input", "output", "cached_input", "cache_write")
# Where a snapshot or variant name continues past the base model's name.
_BOUNDARIES = ("-", "@")
# Model names come from clients, so the resolution cache must not grow without bound.
_MAX_CACHED = 4096
# PyYAML's C loader is about ten times faster than the pure-Python one; both are `safe`.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class PriceTable:
    """Prices by model name; read-only once built, so one table can be shared by every request."""

    __slots__ = ("_prices", "_resolved")

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(prices or {})
        self._resolved: dict[str, Price | None] = {}

    @classmethod
    def empty(cls) -> PriceTable:
        return cls()

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """Read a pricing file. A missing file gives an empty table (the caller decides whether to log it);
        a file that is there but wrong raises ConfigError naming every bad key path."""
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [("", f"cannot read: {exc}")]) from None
        return cls.parse(text, source=source)

    @classmethod
    def parse(cls, text: str, *, source: str = "<pricing>") -> PriceTable:
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(source, [("", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
        problems: list[tuple[str, str]] = []
        prices = _parse_document(data, problems)
        if problems:
            raise ConfigError(source, problems)
        return cls(prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        return model in self._prices

    def models(self) -> list[str]:
        return sorted(self._prices)

    def price_for(self, model: str) -> Price | None:
        """The price of `model`, or None when no known name matches. Runs per request: resolutions are cached."""
        try:
            return self._resolved[model]
        except KeyError:
            pass
        price = self._resolve(model)
        if len(self._resolved) >= _MAX_CACHED:
            self._resolved.clear()
        self._resolved[model] = price
        return price

    def _resolve(self, model: str) -> Price | None:
        if not isinstance(model, str) or not model:
            return None
        price = self._prices.get(model)
        if price is not None:
            return price
        # `openai/gpt-4o`, `models/gemini-2.5-pro`: the provider's own name follows the last slash.
        name = model.rsplit("/", 1)[-1]
        price = self._prices.get(name)
        if price is not None:
            return price
        # Cut at each boundary from the right, so the longest known prefix wins (`gpt-4o-mini-…` before `gpt-4o`).
        end = len(name)
        while True:
            end = max(name.rfind(b, 0, end) for b in _BOUNDARIES)
            if end <= 0:
                return None
            price = self._prices.get(name[:end])
            if price is not None:
                return price


def cost_usd(usage: Usage, price: Price) -> float:
    """What `usage` costs at `price`, in US dollars.

    `prompt_tokens` counts every input token, cache reads and cache writes included (as OpenAI reports cached
    tokens, and as providers that report them apart are normalised); the uncached rest is billed at `input`.
    Reasoning tokens are part of `completion_tokens` and billed as output, as OpenAI and Google bill them.
    """
    # Comparisons, not max(): once per request, and max() is a call with keyword parsing.
    cached = usage.cached_tokens if usage.cached_tokens > 0 else 0
    written = usage.cache_write_tokens if usage.cache_write_tokens > 0 else 0
    uncached = usage.prompt_tokens - cached - written
    if uncached < 0:
        uncached = 0
    completion = usage.completion_tokens if usage.completion_tokens > 0 else 0
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    total = uncached * price.input + cached * cached_rate + written * write_rate + completion * price.output
    return total / 1e6


def _parse_document(data: Any, problems: list[tuple[str, str]]) -> dict[str, Price]:
    if data is None:  # an empty file: no prices, not an error
        return {}
    if not isinstance(data, dict):
        problems.append(("", f"expected a mapping with a 'models' key, got {type(data).__name__}"))
        return {}
    for key in data:
        if key != "models":
            problems.append((str(key), "unknown key (expected: models)"))
    models = data.get("models")
    if models is None:
        return {}
    if not isinstance(models, dict):
        problems.append(("models", f"expected a mapping of model name to price, got {type(models).__name__}"))
        return {}
    prices: dict[str, Price] = {}
    for name, entry in models.items():
        path = f"models.{name}"
        if not isinstance(name, str) or not name:
            # YAML reads `1.5:` as a float and `null:` as None; a model name must be quoted text.
            problems.append((path, f"model name must be a non-empty string, got {name!r}"))
            continue
        price = _parse_price(entry, path, problems)
        if price is not None:
            prices[name] = price
    return prices


def _parse_price(entry: Any, path: str, problems: list[tuple[str, str]]) -> Price | None:
    if not isinstance(entry, dict):
        problems.append((path, f"expected a mapping such as {{input: 0.15, output: 0.60}}, got {entry!r}"))
        return None
    values: dict[str, float | None] = {}
    ok = True
    for key, value in entry.items():
        key_path = f"{path}.{key}"
        if key not in _FIELDS:
            problems.append((key_path, f"unknown key (expected one of: {', '.join(_FIELDS)})"))
            ok = False
        elif value is None and key in ("cached_input", "cache_write"):
            values[key] = None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((key_path, f"expected a number (US dollars per million tokens), got {value!r}"))
            ok = False
        elif not math.isfinite(value) or value < 0:
            problems.append((key_path, f"must be a finite number >= 0, got {value!r}"))
            ok = False
        else:
            values[key] = float(value)
    if "input" not in entry:
        problems.append((f"{path}.input", "required key is missing"))
        ok = False
    if not ok:
        return None
    return Price(
        input=values.get("input") or 0.0,
        output=values.get("output") or 0.0,
        cached_input=values.get("cached_input"),
        cache_write=values.get("cache_write"),
    )
