from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Price
from gateway.context import Usage
from gateway.telemetry.pricing import PriceTable, cost_usd

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "config" / "pricing.yaml"

# Every model the pricing file promises to cover, by provider.
PROMISED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-3.5-turbo",
    "gpt-4-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-3-5-haiku",
    "claude-3-5-sonnet",
    "claude-3-7-sonnet",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-3-haiku",
    "claude-3-opus",
    "gemini-1.5-flash",
    "gemini-1.5-pro",
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "text-embedding-004",
    "gemini-embedding-001",
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> dict[str, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path)
    assert info.value.source == str(path)
    return dict(info.value.problems)


# -- the shipped file ----------------------------------------------------------------------------------------------


def test_shipped_file_loads_and_covers_the_promised_models() -> None:
    table = PriceTable.load(SHIPPED)
    missing = [model for model in PROMISED if model not in table]
    assert missing == []
    assert table.price_for("gpt-4o-mini") == Price(input=0.15, output=0.60, cached_input=0.075)


def test_shipped_anthropic_prices_carry_cache_reads_and_writes() -> None:
    table = PriceTable.load(SHIPPED)
    for model in table.models():
        if model.startswith("claude-"):
            price = table.price_for(model)
            assert price is not None
            assert price.cached_input is not None, model
            assert price.cache_write is not None, model
            if model == "claude-3-haiku":  # published as $0.03 and $0.30, off the multipliers by rounding
                assert (price.cached_input, price.cache_write) == (0.03, 0.30)
                continue
            # Anthropic's multipliers: cache hits 0.1x input, 5-minute writes 1.25x input.
            assert price.cached_input == pytest.approx(price.input * 0.1), model
            assert price.cache_write == pytest.approx(price.input * 1.25), model


def test_shipped_file_leaves_the_mock_unpriced() -> None:
    table = PriceTable.load(SHIPPED)
    assert table.price_for("demo-1") is None
    assert table.price_for("demo") is None


def test_shipped_file_resolves_real_snapshot_names() -> None:
    table = PriceTable.load(SHIPPED)
    assert table.price_for("gpt-4o-2024-08-06") == table.price_for("gpt-4o")
    assert table.price_for("gpt-4o-mini-2024-07-18") == table.price_for("gpt-4o-mini")
    assert table.price_for("claude-3-5-haiku-20241022") == table.price_for("claude-3-5-haiku")
    assert table.price_for("claude-sonnet-4-20250514") == table.price_for("claude-sonnet-4")
    assert table.price_for("gemini-2.0-flash-001") == table.price_for("gemini-2.0-flash")
    # The first gpt-4o snapshot kept its launch price, so it is listed on its own.
    assert table.price_for("gpt-4o-2024-05-13") == Price(input=5.0, output=15.0)


# -- resolution ----------------------------------------------------------------------------------------------------

GPT_4O = Price(input=2.5, output=10.0, cached_input=1.25)
GPT_4O_MINI = Price(input=0.15, output=0.6, cached_input=0.075)
HAIKU = Price(input=0.8, output=4.0, cached_input=0.08, cache_write=1.0)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable({"gpt-4o": GPT_4O, "gpt-4o-mini": GPT_4O_MINI, "claude-3-5-haiku": HAIKU})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", GPT_4O),
        ("openai/gpt-4o", GPT_4O),
        ("azure/gpt-4o-mini", GPT_4O_MINI),
        ("gpt-4o-2024-08-06", GPT_4O),
        ("gpt-4o-latest", GPT_4O),
        ("gpt-4o-mini-2024-07-18", GPT_4O_MINI),  # the longest known prefix wins
        ("claude-3-5-haiku-20241022", HAIKU),
        ("claude-3-5-haiku-latest", HAIKU),
        ("anthropic/claude-3-5-haiku-20241022", HAIKU),
        ("claude-3-5-haiku@20241022", HAIKU),  # Vertex AI's spelling
        ("gpt-4omni", None),  # a prefix counts only up to a boundary
        ("gpt-4", None),
        ("gpt", None),
        ("unknown-model", None),
        ("", None),
        ("-", None),
        ("openai/", None),
    ],
)
def test_price_for_resolves_prefixes_and_snapshots(table: PriceTable, model: str, expected: Price | None) -> None:
    assert table.price_for(model) == expected


def test_price_for_caches_resolutions_within_a_bound(table: PriceTable) -> None:
    assert table.price_for("gpt-4o-2024-08-06") is GPT_4O
    assert table.price_for("gpt-4o-2024-08-06") is GPT_4O
    for i in range(5000):
        table.price_for(f"client-made-up-name-{i}")
    assert len(table._resolved) <= 4096
    assert table.price_for("gpt-4o-2024-08-06") is GPT_4O


def test_empty_and_missing_tables_price_nothing(tmp_path: Path) -> None:
    assert len(PriceTable.empty()) == 0
    assert PriceTable.empty().price_for("gpt-4o") is None
    missing = PriceTable.load(tmp_path / "absent.yaml")
    assert len(missing) == 0
    assert missing.price_for("gpt-4o") is None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "models:\n", "models: {}\n"])
def test_a_file_without_prices_is_an_empty_table(tmp_path: Path, text: str) -> None:
    assert len(PriceTable.load(write(tmp_path, text))) == 0


# -- cost arithmetic -----------------------------------------------------------------------------------------------


def test_cost_bills_cached_tokens_at_the_cached_rate_and_reasoning_as_output() -> None:
    usage = Usage(prompt_tokens=1000, cached_tokens=400, completion_tokens=500, reasoning_tokens=200)
    # 600 uncached × 0.15 + 400 cached × 0.075 + 500 completion (reasoning included) × 0.60 = 90 + 30 + 300
    assert cost_usd(usage, GPT_4O_MINI) == pytest.approx(420 / 1e6, rel=1e-12)


def test_reasoning_tokens_are_not_billed_twice() -> None:
    with_reasoning = Usage(prompt_tokens=100, completion_tokens=500, reasoning_tokens=400)
    without = Usage(prompt_tokens=100, completion_tokens=500)
    assert cost_usd(with_reasoning, GPT_4O) == cost_usd(without, GPT_4O)


def test_cost_bills_cache_writes_at_the_write_rate() -> None:
    # prompt_tokens counts every input token: 2,000 fresh + 6,000 read from cache + 2,000 written to it.
    usage = Usage(prompt_tokens=10_000, cached_tokens=6_000, cache_write_tokens=2_000, completion_tokens=1_000)
    # 2000 × 0.80 + 6000 × 0.08 + 2000 × 1.00 + 1000 × 4.00 = 1600 + 480 + 2000 + 4000
    assert cost_usd(usage, HAIKU) == pytest.approx(8080 / 1e6, rel=1e-12)


def test_cache_rates_default_to_the_input_rate() -> None:
    price = Price(input=2.0, output=8.0)
    usage = Usage(prompt_tokens=1_000_000, cached_tokens=250_000, cache_write_tokens=250_000, completion_tokens=0)
    assert cost_usd(usage, price) == pytest.approx(2.0, rel=1e-12)


def test_embedding_cost_has_no_output() -> None:
    assert cost_usd(Usage(prompt_tokens=1_000_000), Price(input=0.02)) == pytest.approx(0.02, rel=1e-12)


def test_inconsistent_usage_never_gives_a_negative_cost() -> None:
    usage = Usage(prompt_tokens=10, cached_tokens=50, completion_tokens=-5)
    assert cost_usd(usage, GPT_4O) == pytest.approx(50 * 1.25 / 1e6, rel=1e-12)
    assert cost_usd(Usage(), GPT_4O) == 0.0


# -- bad files -----------------------------------------------------------------------------------------------------


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "models:\n  gpt-4o: {input: 2.5\n")
    assert list(problems) == [""]
    assert "invalid YAML" in problems[""]
    assert "line" in problems[""]


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    text = """
prices: {}
models:
  gpt-4o: {input: 2.5, inptu: 1.0}
  gpt-4o-mini: {input: cheap, output: 0.6}
  o1: {input: 15, output: -60}
  o3: {input: true}
  o4-mini: {input: .nan}
  gemini-2.5-pro: {output: 10}
  claude-3-haiku: 0.25
  1.5: {input: 1}
"""
    problems = problems_of(tmp_path, text)
    assert set(problems) == {
        "prices",
        "models.gpt-4o.inptu",
        "models.gpt-4o-mini.input",
        "models.o1.output",
        "models.o3.input",
        "models.o4-mini.input",
        "models.gemini-2.5-pro.input",
        "models.claude-3-haiku",
        "models.1.5",
    }
    assert "unknown key" in problems["models.gpt-4o.inptu"]
    assert "expected a number" in problems["models.gpt-4o-mini.input"]
    assert ">= 0" in problems["models.o1.output"]
    assert "required" in problems["models.gemini-2.5-pro.input"]


def test_the_error_message_names_file_and_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  gpt-4o: {input: -1}\n")
    with pytest.raises(ConfigError, match=r"pricing\.yaml: models\.gpt-4o\.input: must be a finite number >= 0"):
        PriceTable.load(path)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("- gpt-4o\n", ""),
        ("models: [gpt-4o]\n", "models"),
    ],
)
def test_wrong_shapes_are_errors(tmp_path: Path, text: str, path: str) -> None:
    assert path in problems_of(tmp_path, text)


def test_null_cache_prices_mean_unset(tmp_path: Path) -> None:
    table = PriceTable.load(write(tmp_path, "models:\n  m: {input: 1, output: 2, cached_input: null}\n"))
    assert table.price_for("m") == Price(input=1.0, output=2.0)


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(tmp_path)  # a directory
