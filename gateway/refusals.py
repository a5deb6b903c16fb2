"""A refused request parameter, worded and coded as OpenAI's API words it (`Missing required parameter:
'messages[0].content'.`, code missing_required_parameter), `param` the field's path as OpenAI writes it.

Every ingress that checks a body in OpenAI's terms says it the same way: the chat endpoints' validation
(gateway/api/validation) and the Responses translation (gateway/providers/openai/responses) make their errors here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.errors import InvalidRequest

_KINDS: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    list: "an array",
    dict: "an object",
    type(None): "null",
}
_SHOWN_CHARS = 80  # of a client's value quoted in an error message
# OpenAI's codes for a number out of its range, by (decimal, above).
_RANGE_CODES = {
    (False, False): "integer_below_min_value",
    (False, True): "integer_above_max_value",
    (True, False): "decimal_below_min_value",
    (True, True): "decimal_above_max_value",
}


def kind(value: Any) -> str:
    """A JSON value's type as OpenAI's messages name it ("an integer"); JSON types only."""
    return _KINDS.get(type(value), "a value")


def kind_of_type(cls: type) -> str:
    return _KINDS[cls]


def shown(value: Any) -> str:
    """A client's value as a message quotes it: a megabyte is not sent back whole."""
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: Any, supported: Collection[str]) -> InvalidRequest:
    names = [f"'{name}'" for name in supported]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])}{',' if len(names) > 2 else ''} and {names[-1]}"
    return InvalidRequest(
        f"Invalid value: '{shown(value)}'. Supported values are: {listed}.", param=param, code="invalid_value"
    )


def out_of_range(param: str, value: float, bound: float, *, above: bool, decimal: bool) -> InvalidRequest:
    number = "decimal" if decimal else "integer"
    side, relation = ("above maximum", "<=") if above else ("below minimum", ">=")
    code = _RANGE_CODES[decimal, above]
    return InvalidRequest(
        f"Invalid '{param}': {number} {side} value. Expected a value {relation} {bound:g}, but got {shown(value)} "
        "instead.",
        param=param,
        code=code,
    )


def empty_array(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        param=param,
        code="empty_array",
    )


def array_too_long(param: str, limit: int, length: int) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, but got an array with "
        f"length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def empty_string(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string instead.",
        param=param,
        code="empty_string",
    )


def string_too_long(param: str, limit: int, length: int) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, but got a string with "
        f"length {length} instead.",
        param=param,
        code="string_above_max_length",
    )
