"""The fields of a request record and the type each one has: one declared list, which the recorder types every record
with before it is queued (so that no sink and no store ever gets a dict where a model name goes) and which both
stores write their rows by. Adding a field is one line here (and its column in the migrations).

Typing is a check per field, cheap when the record is right (about 1 µs of CPU for the 39 fields); a wrong value is
converted, never refused: text that is not text becomes its JSON (a request refused at validation keeps what it
sent, as text), numbers are made finite and fit their column, containers of the wrong kind become empty ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

Record = dict[str, Any]

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Kind:
    """A column's type: `fits`, a Python expression of `v` true when the value can be written as it is, and
    `convert`, which makes any other value (None for a missing field) into one that can."""

    name: str
    fits: str
    convert: Callable[[Any], Any]


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # a str that is not valid UTF-8 (lone surrogates): kept, escaped
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool | int | float):
        return str(value)
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError):  # a big int or a lone surrogate inside
        return repr(value)


def json_safe(value: Any) -> Any:
    """A copy JSON can hold: text made valid UTF-8 (a lone surrogate escaped), an int past 64 bits and any other
    object as text, keys as text."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k if isinstance(k, str) else str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return json_safe(str(value))


def json_bytes(value: Any) -> bytes:
    """A JSON column's value as JSON, whatever it holds: what JSON has no type for as its text, and when orjson
    cannot encode it at all (an int past 64 bits, a lone surrogate), made safe first."""
    try:
        return orjson.dumps(value)  # JSON's own types, as nearly always: twice as fast as with the options below
    except TypeError:
        pass
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return orjson.dumps(json_safe(value))


def _integer(limit: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return 0
        if isinstance(value, float):
            if not math.isfinite(value):
                return 0
            value = int(value)
        if not isinstance(value, int):  # bool is an int
            return 0
        return max(-limit - 1, min(limit, int(value)))

    return convert


def _real(default: float | None) -> Callable[[Any], float | None]:
    def convert(value: Any) -> float | None:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return default
        if isinstance(value, int):  # bool too
            try:
                value = float(value)
            except OverflowError:
                return default
        if not isinstance(value, float) or not math.isfinite(value):
            return default  # NaN is stored as NULL by SQLite and as null in the spool's JSON
        return value

    return convert


# `v - v == 0.0` is false for NaN and the infinities.
# A str with a lone surrogate is not UTF-8: both stores refuse it, so only ASCII or encodable text fits as it is.
# typed() checks that for all the text fields of a record at once (_compile_typed), after their types.
TEXT = Kind("text", "type(v) is str", _text)
INTEGER = Kind("integer", f"type(v) is int and {-_INT32 - 1} <= v <= {_INT32}", _integer(_INT32))  # PostgreSQL's
BIGINT = Kind("bigint", f"type(v) is int and {-_INT64 - 1} <= v <= {_INT64}", _integer(_INT64))
REAL = Kind("real", "type(v) is float and v - v == 0.0", _real(0.0))
REAL_OR_NULL = Kind("real or null", "v is None or type(v) is float and v - v == 0.0", _real(None))
FLAG = Kind("flag", "type(v) is bool", lambda v: v is True or v == 1)
LIST = Kind("list", "type(v) is list", lambda v: list(v) if isinstance(v, tuple) else [])  # a JSON column
MAP = Kind("map", "type(v) is dict", lambda v: {})  # a JSON column

# The columns of model_cost_logs, in the order stores write them.
RECORD_FIELDS: dict[str, Kind] = {
    "id": TEXT,
    "ts": REAL,
    "endpoint": TEXT,
    "key_name": TEXT,
    "key_id": TEXT,
    "project": TEXT,
    "team": TEXT,
    "user_id": TEXT,
    "model_requested": TEXT,
    "model_served": TEXT,
    "provider": TEXT,
    "deployment": TEXT,
    "status": INTEGER,
    "error_type": TEXT,
    "error_domain": TEXT,
    "stream": FLAG,
    "latency_ms": REAL,
    "upstream_ms": REAL,
    "ttfb_ms": REAL_OR_NULL,
    "ttft_ms": REAL_OR_NULL,
    "overhead_ms": REAL,
    "prompt_tokens": BIGINT,
    "completion_tokens": BIGINT,
    "cached_tokens": BIGINT,
    "reasoning_tokens": BIGINT,
    "total_tokens": BIGINT,
    "cost_usd": REAL_OR_NULL,
    "usage_source": TEXT,
    "spans": LIST,
    "tags": MAP,
    "attempts": INTEGER,
    "route_reason": TEXT,
    "guardrails": LIST,
    "trace_id": TEXT,
    "parent_span_id": TEXT,
    "content_input": TEXT,
    "content_output": TEXT,
    "metadata": MAP,
    "client_request_id": TEXT,  # the client's X-Request-ID; "id" is the gateway's
    "cache": TEXT,  # the response cache: hit, semantic-hit, miss, bypass; "" when it was not on
    "cache_source_id": TEXT,  # on a hit: the id of the record whose answer was served
    "saved_usd": REAL_OR_NULL,  # on a hit: what the upstream call would have cost (cost_usd is 0)
}
RECORD_COLUMNS = tuple(RECORD_FIELDS)
JSON_COLUMNS = frozenset(name for name, kind in RECORD_FIELDS.items() if kind in (LIST, MAP))


def _compile_typed(fields: dict[str, Kind]) -> Callable[[Record], Record]:
    """typed(), written out field by field from the schema (as dataclasses writes its __init__): a loop calling a
    check per field cost 7 µs a record, this straight-line code 1.2 (builtins bound as locals, fields read by
    subscript; a record missing a field is given the field's empty value first)."""
    builtins = ("type", "str", "int", "float", "bool", "list", "dict")
    lines = [f"def typed(record, {', '.join(f'{b}={b}' for b in builtins)}):", "    try:"]
    scope: dict[str, Any] = {"_fill": _fill, "_utf8": _utf8}
    for i, (name, kind) in enumerate(fields.items()):
        scope[f"_convert{i}"] = kind.convert
        lines += [
            f"        v = record[{name!r}]",
            f"        if not ({kind.fits}):",
            f"            record[{name!r}] = _convert{i}(v)",
        ]
    # The text fields' encoding, all at once: their concatenation is ASCII for nearly every record (one call where a
    # call per field cost a fifth of the function); else each is checked, and one that is not UTF-8 escaped.
    texts = [name for name, kind in fields.items() if kind is TEXT]
    lines += [
        f"        if not ''.join(({''.join(f'record[{name!r}], ' for name in texts)})).isascii():",
        "            _encodable(record)",
        "    except KeyError:",
        "        return typed(_fill(record))",
        "    return record",
    ]
    scope["_encodable"] = _encodable
    exec("\n".join(lines), scope)  # code made from the schema above, never from input
    function: Callable[[Record], Record] = scope["typed"]
    function.__doc__ = """The record with every field of its declared type, changed in place and returned: a wrong
    value converted, a missing field given its kind's empty value; fields the schema does not name are left as is."""
    return function


def _encodable(record: Record) -> None:
    """A record's text fields that are not valid UTF-8 (a lone surrogate), escaped."""
    for name, kind in RECORD_FIELDS.items():
        if kind is TEXT and not _utf8(record[name]):
            record[name] = _text(record[name])


def _fill(record: Record) -> Record:
    for name, kind in RECORD_FIELDS.items():
        if name not in record:
            record[name] = kind.convert(None)
    return record


typed = _compile_typed(RECORD_FIELDS)
