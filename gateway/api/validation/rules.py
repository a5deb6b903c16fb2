"""Checks of one value each, and the errors they raise, worded as OpenAI words them.

A check is `check(value, name)`: it returns when the value is good and raises `Invalid` when it is not. `name` is
the field's own name (or index); each container the error passes through on its way up adds its own with
`Invalid.within`, and `Invalid.error()` makes the InvalidRequest whose param is the whole path
(`messages[0].content[1].type`). So a good body costs no string building: paths are made only for an error.

Checks look at `type(value)` rather than isinstance: a boolean is not an integer here, as in OpenAI's API. An
integral decimal (`1.0`) passes for an integer: JSON does not tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from gateway import refusals
from gateway.errors import InvalidRequest

Key = str | int  # a field's name or an array index
Check = Callable[[Any, Key], None]
Fields = tuple[tuple[str, type], ...]  # an object's simple fields: (name, JSON type) pairs


class Invalid(Exception):
    """A refused value on its way up to validate(), collecting its path."""

    def __init__(self, key: Key, make: Callable[[str], InvalidRequest]) -> None:
        self.path = [key]  # innermost first
        self.make = make

    def within(self, key: Key) -> Invalid:
        self.path.append(key)
        return self

    def error(self) -> InvalidRequest:
        param = ""
        for key in reversed(self.path):
            param = f"{param}[{key}]" if type(key) is int else f"{param}.{key}" if param else str(key)
        return self.make(param)


# -- errors (worded in gateway/refusals.py) ------------------------------------------------------------------------


def invalid_type(key: Key, expected: str, value: Any) -> Invalid:
    return Invalid(key, lambda param: refusals.invalid_type(param, expected, value))


def missing(key: Key) -> Invalid:
    return Invalid(key, refusals.missing)


def invalid_value(key: Key, value: Any, supported: Collection[str]) -> Invalid:
    return Invalid(key, lambda param: refusals.invalid_value(param, value, supported))


def out_of_range(key: Key, value: float, bound: float, *, above: bool, decimal: bool) -> Invalid:
    return Invalid(key, lambda param: refusals.out_of_range(param, value, bound, above=above, decimal=decimal))


def empty_array(key: Key) -> Invalid:
    return Invalid(key, refusals.empty_array)


def array_too_long(key: Key, limit: int, length: int) -> Invalid:
    return Invalid(key, lambda param: refusals.array_too_long(param, limit, length))


def empty_string(key: Key) -> Invalid:
    return Invalid(key, refusals.empty_string)


# -- checks ----------------------------------------------------------------------------------------------------------


def string(value: Any, key: Key) -> None:
    if type(value) is not str:
        raise invalid_type(key, "a string", value)


def boolean(value: Any, key: Key) -> None:
    if type(value) is not bool:
        raise invalid_type(key, "a boolean", value)


def obj(value: Any, key: Key) -> None:
    if type(value) is not dict:
        raise invalid_type(key, "an object", value)


def array(value: Any, key: Key) -> None:
    if type(value) is not list:
        raise invalid_type(key, "an array", value)


def integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any, key: Key) -> None:
        cls = type(value)
        if cls is not int:
            if cls is not float or not value.is_integer():
                raise invalid_type(key, "an integer", value)
            value = int(value)
        if low is not None and value < low:
            raise out_of_range(key, value, low, above=False, decimal=False)
        if high is not None and value > high:
            raise out_of_range(key, value, high, above=True, decimal=False)

    return check


def number(low: float, high: float) -> Check:
    def check(value: Any, key: Key) -> None:
        cls = type(value)
        if cls is not float and cls is not int:
            raise invalid_type(key, "a number", value)
        if value < low:
            raise out_of_range(key, value, low, above=False, decimal=True)
        if value > high:
            raise out_of_range(key, value, high, above=True, decimal=True)

    return check


def one_of(*values: str) -> Check:
    allowed = frozenset(values)

    def check(value: Any, key: Key) -> None:
        if type(value) is not str:
            raise invalid_type(key, "a string", value)
        if value not in allowed:
            raise invalid_value(key, value, values)

    return check


def stop(value: Any, key: Key) -> None:
    """A stop sequence, or an array of up to four."""
    if type(value) is str:
        return
    if type(value) is not list:
        raise invalid_type(key, "a string or an array of strings", value)
    if len(value) > 4:
        raise array_too_long(key, 4, len(value))
    for i, item in enumerate(value):
        if type(item) is not str:
            raise invalid_type(i, "a string", item).within(key)


_BIAS = number(-100, 100)


def logit_bias(value: Any, key: Key) -> None:
    """Token ids to a bias between -100 and 100."""
    if type(value) is not dict:
        raise invalid_type(key, "an object", value)
    for token, bias in value.items():
        try:
            _BIAS(bias, token)
        except Invalid as exc:
            raise exc.within(key) from None


def string_map(value: Any, key: Key) -> None:
    """An object of strings (`metadata`)."""
    if type(value) is not dict:
        raise invalid_type(key, "an object", value)
    for name, item in value.items():
        if type(item) is not str:
            raise invalid_type(name, "a string", item).within(key)


def texts_or_tokens(*, non_empty: bool, max_items: int = 0) -> Check:
    """A prompt or an embeddings input: a string, an array of strings, an array of token ids (integers), or an
    array of such arrays. `non_empty` (embeddings) refuses empty strings and arrays, as OpenAI does there."""

    def check(value: Any, key: Key) -> None:
        cls = type(value)
        if cls is str:
            if non_empty and not value:
                raise empty_string(key)
            return
        if cls is not list:
            raise invalid_type(key, "a string or an array", value)
        if not value:
            if non_empty:
                raise empty_array(key)
            return
        if max_items and len(value) > max_items:
            raise array_too_long(key, max_items, len(value))
        first = type(value[0])
        if first is str:
            for i, item in enumerate(value):
                if type(item) is not str:
                    raise invalid_type(i, "a string", item).within(key)
                if non_empty and not item:
                    raise empty_string(i).within(key)
        elif first is int:
            _tokens(value, key)
        elif first is list:
            for i, item in enumerate(value):
                if type(item) is not list:
                    raise invalid_type(i, "an array of integers", item).within(key)
                if non_empty and not item:
                    raise empty_array(i).within(key)
                try:
                    _tokens(item, i)
                except Invalid as exc:
                    raise exc.within(key) from None
        else:
            raise invalid_type(0, "a string, an integer or an array of integers", value[0]).within(key)

    return check


def _tokens(value: list[Any], key: Key) -> None:
    for i, item in enumerate(value):
        if type(item) is not int:
            raise invalid_type(i, "an integer", item).within(key)


def fields(value: dict[str, Any], required: Fields, optional: Fields) -> None:
    """An object's simple fields by JSON type: each required one present, each optional one of its type or null."""
    get = value.get
    for name, cls in required:
        item = get(name)
        if type(item) is not cls:
            raise missing(name) if item is None else invalid_type(name, refusals.kind_of_type(cls), item)
    for name, cls in optional:
        item = get(name)
        if item is not None and type(item) is not cls:
            raise invalid_type(name, refusals.kind_of_type(cls), item)
