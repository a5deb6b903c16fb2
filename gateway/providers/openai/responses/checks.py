"""The errors of a Responses request, worded and coded as OpenAI's API words them (`Missing required parameter:
'input[0].content'.`, code missing_required_parameter), with `param` the field's path as OpenAI writes it.

The wording is gateway/refusals.py's, the chat endpoints' validation's too; these are the Responses translation's
checks, which return the value they checked.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.errors import InvalidRequest
from gateway.refusals import empty_string, invalid_type, invalid_value, missing, out_of_range

_EXACT_FLOAT_INT = 2**53


def unsupported(param: str, message: str) -> InvalidRequest:
    """A value OpenAI takes that the gateway cannot translate into a chat request (a hosted tool, background)."""
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param, code="unsupported_value")


def string(value: Any, param: str, *, non_empty: bool = False) -> str:
    if type(value) is not str:
        raise invalid_type(param, "a string", value)
    if non_empty and not value:
        raise empty_string(param)
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
