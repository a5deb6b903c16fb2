"""The errors of a Responses request, worded and coded as OpenAI's API words them (`Missing required parameter:
'input[0].content'.`, code missing_required_parameter), with `param` the field's path as OpenAI writes it.

The chat endpoint's validation (gateway/api/validation) words them the same way, but it belongs to the API layer,
which a provider must not import: these few helpers are the Responses translation's own.
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
_SHOWN_CHARS = 80
_EXACT_FLOAT_INT = 2**53


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    got = _KINDS.get(type(value), "a value")
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param=param, code="invalid_type"
    )


def invalid_value(param: str, value: Any, supported: Collection[str]) -> InvalidRequest:
    listed = ", ".join(f"'{name}'" for name in supported)
    return InvalidRequest(
        f"Invalid value: '{_shown(value)}'. Supported values are: {listed}.", param=param, code="invalid_value"
    )


def unsupported(param: str, message: str) -> InvalidRequest:
    """A value OpenAI takes that the gateway cannot translate into a chat request (a hosted tool, background)."""
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param, code="unsupported_value")


def out_of_range(param: str, value: float, bound: float, *, above: bool, decimal: bool) -> InvalidRequest:
    number = "decimal" if decimal else "integer"
    side, relation = ("above maximum", "<=") if above else ("below minimum", ">=")
    code = f"{number}_{'above_max' if above else 'below_min'}_value"
    return InvalidRequest(
        f"Invalid '{param}': {number} {side} value. Expected a value {relation} {bound:g}, but got {_shown(value)} "
        "instead.",
        param=param,
        code=code,
    )


def string(value: Any, param: str, *, non_empty: bool = False) -> str:
    if type(value) is not str:
        raise invalid_type(param, "a string", value)
    if non_empty and not value:
        raise InvalidRequest(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string "
            "instead.",
            param=param,
            code="empty_string",
        )
    return value


def obj(value: Any, param: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise invalid_type(param, "an object", value)
    return value


def array(value: Any, param: str) -> list[Any]:
    if type(value) is not list:
        raise invalid_type(param, "an array", value)
    return value


def boolean(value: Any, param: str) -> bool:
    if type(value) is not bool:
        raise invalid_type(param, "a boolean", value)
    return value


def integer(value: Any, param: str, low: int) -> int:
    """An integer at least `low`; an integral decimal (16.0) passes as one: JSON does not tell them apart."""
    cls = type(value)
    if cls is not int and (cls is not float or not value.is_integer() or abs(value) > _EXACT_FLOAT_INT):
        raise invalid_type(param, "an integer", value)
    if value < low:
        raise out_of_range(param, value, low, above=False, decimal=False)
    return int(value)


def number(value: Any, param: str, low: float, high: float) -> float:
    cls = type(value)
    if cls is not int and cls is not float:
        raise invalid_type(param, "a number", value)
    if value < low:
        raise out_of_range(param, value, low, above=False, decimal=True)
    if value > high:
        raise out_of_range(param, value, high, above=True, decimal=True)
    return float(value) if cls is float else value


def one_of(value: Any, param: str, supported: Collection[str]) -> str:
    if type(value) is not str:
        raise invalid_type(param, "a string", value)
    if value not in supported:
        raise invalid_value(param, value, supported)
    return value


def kind_of(item: dict[str, Any], param: str, supported: Collection[str]) -> str:
    """An object's `type`, which must be there and one of `supported`."""
    kind = item.get("type")
    if kind is None:
        raise missing(f"{param}.type")
    return one_of(kind, f"{param}.type", supported)


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
