"""The JSON-schema check: does a model's answer parse as JSON and satisfy the request's schema?

The schema comes with each request (`response_format`), so checks are built per request; the costly part, the
validator, is cached by the digest of the schema's canonical JSON in a small LRU, and most traffic reuses a few
schemas. The LRU is bounded by what its entries hold as well as by their number: a client's schema can be as large
as its body.

The check's message is written for the model as much as for a person: on a failed answer the gateway retries with
"your previous answer failed validation: <message>", so it names each error's JSON path and what was wrong
("$.items[0].price: 'abc' is not of type 'number'"), at most three of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

import orjson

# No type stubs are installed for jsonschema (types-jsonschema is not a dev dependency).
from jsonschema import Draft202012Validator, SchemaError, ValidationError  # type: ignore[import-untyped]
from referencing import Registry
from referencing.exceptions import NoSuchResource

from gateway.guardrails.base import CheckResult, Finding

__all__ = ["JsonSchemaCheck", "schema_from_response_format", "validator_for"]

MAX_ERRORS_SHOWN = 3
# Errors counted for "and N more"; a broken answer to a big schema can have thousands.
MAX_ERRORS_COUNTED = 100
# An error message quotes the offending value, which can be a whole object.
MAX_ERROR_CHARS = 200
CACHE_SIZE = 256
# What the cached validators may hold, in all, as counted by _held. A schema is the client's and may be as large as
# its body (server.max_body_mb): 256 of them were bounded by nothing but that.
CACHE_BYTES = 16 << 20
# What a cached validator holds, measured with tracemalloc (tests/integration/test_kept_memory.py): the validator's
# own objects, about 1 KiB, and the parsed schema, about 5 bytes per byte of its JSON (60 B to 85 KB measured).
_ENTRY_OVERHEAD = 2048
_PER_JSON_BYTE = 6


def _held(json_length: int) -> int:
    return _ENTRY_OVERHEAD + _PER_JSON_BYTE * json_length


class _ValidatorCache:
    """Validators by the digest of the canonical schema JSON, least recently used evicted first, at most `size` of
    them holding at most `max_bytes` (_held's count); a schema that would take more than an eighth of that is
    validated without being kept. The lock makes it safe to share with worker threads; on the event loop it is
    never contended."""

    def __init__(self, size: int, max_bytes: int = CACHE_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0  # _held's count of what the kept validators hold
        self._lock = threading.Lock()
        # The key is a digest, not the JSON: orjson's bytes sit in the buffer it grew (up to ten times their length).
        self._items: OrderedDict[bytes, tuple[Draft202012Validator, int]] = OrderedDict()

    def get(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        """The validator, built here when it is not kept (see lookup and build)."""
        found, key, held = self.lookup(schema)
        return found if found is not None else self.build(schema, key, held)

    def lookup(
        self, schema: Mapping[str, Any], max_bytes: int | None = None
    ) -> tuple[Draft202012Validator | None, bytes, int]:
        """(the kept validator or None, the schema's key, what its validator would hold): cheap, for the event loop.
        ValueError when the schema is not JSON, or its JSON is longer than `max_bytes`."""
        try:
            canonical = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        except TypeError as exc:
            raise ValueError(f"the JSON schema is not JSON: {exc}") from None
        if max_bytes is not None and len(canonical) > max_bytes:
            raise ValueError(
                f"the JSON schema is {len(canonical):,} bytes of JSON; this gateway checks schemas of at most "
                f"{max_bytes:,} (guardrails.json_schema_max_kb)"
            )
        key = hashlib.blake2b(canonical, digest_size=16).digest()
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item[0], key, item[1]
        return None, key, _held(len(canonical))

    def build(self, schema: Mapping[str, Any], key: bytes, held: int) -> Draft202012Validator:
        """The schema checked against the meta-schema and its validator made, then kept: some 10 µs of CPU a byte
        of its JSON (jsonschema's meta-schema validation, in Python), which a filter runs off the event loop. Safe
        on any thread: built outside the lock (two threads building the same schema is harmless)."""
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from None
        validator = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER, registry=_LOCAL_ONLY
        )
        if held > self.max_bytes // 8:
            return validator
        with self._lock:
            if key not in self._items:
                self._items[key] = (validator, held)
                self.bytes += held
            while len(self._items) > self.size or self.bytes > self.max_bytes:
                self.bytes -= self._items.popitem(last=False)[1][1]
        return validator


_CACHE = _ValidatorCache(CACHE_SIZE)


def _refuse_retrieval(uri: str) -> Any:
    # jsonschema fetches a $ref to an http(s) URL by default (urllib, no timeout, on the thread that validates: the
    # event loop). The schema is the client's (response_format): that would fetch any URL the gateway can reach
    # (a cloud's metadata service, an internal admin page) and stall every request meanwhile. Only references
    # inside the schema itself ("#/$defs/...") resolve.
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class


_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]  # attrs


def validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    """The cached Draft 2020-12 validator for `schema` (formats checked); ValueError if it is no valid schema. Built
    on the calling thread: a policy's schema, checked when the policies load."""
    return _CACHE.get(schema)


async def validator_off_loop(schema: Mapping[str, Any], max_bytes: int) -> Draft202012Validator:
    """validator_for a client's schema (response_format) at most `max_bytes` of JSON, on the event loop: a kept
    validator at once, a new one built on a worker thread. Built on the loop, a schema of 74 KB held every request
    of the process for 0.75 s, and a client could send a new one each time; on a thread the loop goes on, sharing
    the interpreter with it, and max_bytes bounds how long the thread works."""
    found, key, held = _CACHE.lookup(schema, max_bytes)
    if found is not None:
        return found
    return await asyncio.to_thread(_CACHE.build, schema, key, held)


def schema_from_response_format(response_format: Any) -> dict[str, Any] | None:
    """The schema of an OpenAI `response_format` of type `json_schema`
    (`{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}`); None for
    `json_object`, `text`, no response_format, or a json_schema without a schema."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        return None
    schema = spec.get("schema")
    return dict(schema) if isinstance(schema, Mapping) else None


def _path_key(error: ValidationError) -> tuple[tuple[int, int | str], ...]:
    # In document order: list indices numerically, so [2] comes before [10].
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in error.absolute_path)


def _summary(errors: list[ValidationError], describe: Callable[[ValidationError], str]) -> str:
    text = "; ".join(describe(e) for e in errors[:MAX_ERRORS_SHOWN])
    if len(errors) > MAX_ERRORS_SHOWN:
        more = len(errors) - MAX_ERRORS_SHOWN
        text += f" (and {more}{'+' if len(errors) == MAX_ERRORS_COUNTED else ''} more)"
    return text


def _locate(error: ValidationError) -> str:
    """Where and which keyword failed: no value of the answer (it may hold personal data)."""
    return f"{error.json_path}: fails {error.validator!r}"


def _describe(error: ValidationError) -> str:
    message = error.message
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return f"{error.json_path}: {message}"


class JsonSchemaCheck:
    """Validates an answer (a string that should be JSON) against `schema`; triggered when it does not parse or
    does not validate. ValueError at construction if `schema` is not a valid JSON Schema."""

    name = "json_schema"

    def __init__(self, schema: Mapping[str, Any], validator: Draft202012Validator | None = None) -> None:
        """`validator`: schema's, when the caller has it (validator_off_loop's); else validator_for's."""
        self._validator = validator if validator is not None else validator_for(schema)

    def check(self, text: str) -> CheckResult:
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return CheckResult(
                self.name,
                score=1.0,
                findings=[Finding("json_schema.parse", 0, len(text))],
                triggered=True,
                message=f"the answer is not valid JSON: {exc}",
            )
        errors = self._errors(document)
        if not errors:
            return CheckResult(self.name)
        # Records and errors name where and which keyword failed, never the answer's values (they may hold
        # personal data); retry_hint() gives the model the full messages.
        message = _summary(errors, _locate)
        return CheckResult(
            self.name,
            score=1.0,
            findings=[Finding("json_schema.invalid", 0, len(text))],
            triggered=True,
            message=message,
        )

    def retry_hint(self, text: str) -> str:
        """What failed, with the offending values, for the model to fix in a retry (never recorded)."""
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"the answer is not valid JSON: {exc}"
        return _summary(self._errors(document), _describe)

    def _errors(self, document: Any) -> list[ValidationError]:
        try:
            return sorted(islice(self._validator.iter_errors(document), MAX_ERRORS_COUNTED), key=_path_key)
        except Exception as exc:  # noqa: BLE001 - an unresolvable $ref and the like: the schema is at fault
            raise ValueError(f"the schema cannot be applied: {type(exc).__name__}") from None
