"""Checks of a chat request's structured fields: messages and their content parts, tools, tool_choice and
response_format, as OpenAI checks them (the types and the fields each kind needs; unknown fields pass).

Each check raises `Invalid` with the key where it found the fault; a container adds its own key on the way up
(`except Invalid as exc: raise exc.within(i)`), so a good body costs no path strings (see rules.py).
"""

from __future__ import annotations

from typing import Any

from gateway.api.validation.rules import (
    Fields,
    Invalid,
    Key,
    array_too_long,
    empty_array,
    fields,
    invalid_type,
    invalid_value,
    missing,
)

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
TOOL_TYPES = ("function", "custom")
TOOL_CHOICE_TYPES = ("function", "custom", "allowed_tools")
MAX_TOOLS = 128

_ROLES = frozenset(ROLES)
_CONTENT = "a string or an array of content parts"
# The simple fields of each object: what it must carry, and what it may, by JSON type.
_NONE: Fields = ()
_NAMED: Fields = (("name", str),)
_URL: Fields = (("url", str),)
_DETAIL: Fields = (("detail", str),)
_AUDIO: Fields = (("data", str), ("format", str))
_FILE: Fields = (("file_id", str), ("file_data", str), ("filename", str))
_CALL: Fields = (("name", str), ("arguments", str))
_CUSTOM_CALL: Fields = (("input", str),)
_FUNCTION: Fields = (("description", str), ("parameters", dict), ("strict", bool))
_DESCRIBED: Fields = (("description", str),)
_JSON_SCHEMA: Fields = (("description", str), ("schema", dict), ("strict", bool))
_TEXT: Fields = (("text", str),)
_REFUSAL: Fields = (("refusal", str),)
_ID: Fields = (("id", str),)
_TOOL_CALL_ID: Fields = (("tool_call_id", str),)
_STREAM_OPTIONS: Fields = (("include_usage", bool), ("include_obfuscation", bool))
_ALLOWED_TOOLS: Fields = (("mode", str), ("tools", list))


def messages(value: Any, key: Key) -> None:
    if type(value) is not list:
        raise invalid_type(key, "an array", value)
    if not value:
        raise empty_array(key)
    roles = _ROLES
    for i, message in enumerate(value):
        if type(message) is not dict:
            raise invalid_type(i, "an object", message).within(key)
        try:
            role = message.get("role")
            if type(role) is not str or role not in roles:
                raise _bad_kind(role, "role", ROLES)
            content = message.get("content")
            if type(content) is list:
                _parts(content)
            elif type(content) is not str and not (content is None and _may_omit_content(role, message)):
                raise missing("content") if "content" not in message else invalid_type("content", _CONTENT, content)
            if len(message) > 2 or "content" not in message or role == "tool" or role == "function":
                _extras(message, role)  # fields besides role and content
        except Invalid as exc:
            raise exc.within(i).within(key) from None


def _may_omit_content(role: str, message: dict[str, Any]) -> bool:
    """An assistant turn that only called tools (or spoke audio, or refused) has null content; so may a function's."""
    if role == "assistant":
        get = message.get
        return (
            get("tool_calls") is not None
            or get("function_call") is not None
            or get("audio") is not None
            or get("refusal") is not None
        )
    return role == "function"


def _extras(message: dict[str, Any], role: str) -> None:
    name = message.get("name")
    if name is None:
        if role == "function":
            raise missing("name")
    elif type(name) is not str:
        raise invalid_type("name", "a string", name)
    if role == "tool":
        if type(message.get("tool_call_id")) is not str:
            fields(message, _TOOL_CALL_ID, _NONE)  # raises the error
    elif role == "assistant":
        if message.get("refusal") is not None:
            fields(message, _NONE, _REFUSAL)
        calls = message.get("tool_calls")
        if calls is not None:
            _tool_calls(calls)
        call = message.get("function_call")
        if call is not None:
            _object(message, "function_call", _CALL, _NONE)


def _parts(parts: list[Any]) -> None:
    for j, part in enumerate(parts):
        if type(part) is not dict:
            raise invalid_type(j, "an object", part).within("content")
        try:
            kind = part.get("type")
            if kind == "text":
                if type(part.get("text")) is not str:
                    fields(part, _TEXT, _NONE)  # raises the error
            elif kind == "image_url":
                _object(part, "image_url", _URL, _DETAIL)
            elif kind == "input_audio":
                _object(part, "input_audio", _AUDIO, _NONE)
            elif kind == "file":
                _object(part, "file", _NONE, _FILE)
            elif kind == "refusal":
                fields(part, _REFUSAL, _NONE)
            elif type(kind) is not str or not kind:
                raise _bad_kind(kind, "type", PART_TYPES)
            # Another named type passes as it is: OpenAI-compatible servers take parts OpenAI does not (vLLM's
            # video_url, audio_url), and refusing them here would break drop-in for those deployments.
        except Invalid as exc:
            raise exc.within(j).within("content") from None


def _object(holder: dict[str, Any], name: str, required: Fields, optional: Fields) -> None:
    """`holder[name]`: an object that must be there, with its own required and optional fields."""
    value = holder.get(name)
    if type(value) is not dict:
        raise missing(name) if value is None else invalid_type(name, "an object", value)
    get = value.get
    for field, cls in required:
        if type(get(field)) is not cls:
            break
    else:
        for field, cls in optional:
            item = get(field)
            if item is not None and type(item) is not cls:
                break
        else:
            return
    try:
        fields(value, required, optional)  # raises the error
    except Invalid as exc:
        raise exc.within(name) from None


def _bad_kind(kind: Any, key: Key, supported: tuple[str, ...]) -> Invalid:
    """The error for a `type` (or `role`) that is missing, not a string, or none of the supported ones."""
    if kind is None:
        return missing(key)
    if type(kind) is not str:
        return invalid_type(key, "a string", kind)
    return invalid_value(key, kind, supported)


def _tool_calls(value: Any) -> None:
    if type(value) is not list:
        raise invalid_type("tool_calls", "an array", value)
    for j, call in enumerate(value):
        if type(call) is not dict:
            raise invalid_type(j, "an object", call).within("tool_calls")
        try:
            if type(call.get("id")) is not str:
                fields(call, _ID, _NONE)  # raises the error
            kind = call.get("type")
            if kind == "function" or kind is None:  # older SDKs' calls may leave the type out
                _object(call, "function", _CALL, _NONE)
            elif kind == "custom":
                _object(call, "custom", _NAMED, _CUSTOM_CALL)
            else:
                raise _bad_kind(kind, "type", TOOL_TYPES)
        except Invalid as exc:
            raise exc.within(j).within("tool_calls") from None


def tools(value: Any, key: Key) -> None:
    if type(value) is not list:
        raise invalid_type(key, "an array", value)
    if len(value) > MAX_TOOLS:
        raise array_too_long(key, MAX_TOOLS, len(value))
    for i, tool in enumerate(value):
        if type(tool) is not dict:
            raise invalid_type(i, "an object", tool).within(key)
        try:
            kind = tool.get("type")
            if kind == "function":
                _object(tool, "function", _NAMED, _FUNCTION)
            elif kind == "custom":
                _object(tool, "custom", _NAMED, _DESCRIBED)
            elif type(kind) is not str or not kind:
                raise _bad_kind(kind, "type", TOOL_TYPES)
            # Another named type passes, as for content parts: a provider's own tools (web search...) are its call.
        except Invalid as exc:
            raise exc.within(i).within(key) from None


def functions(value: Any, key: Key) -> None:
    """The older form of tools: an array of functions."""
    if type(value) is not list:
        raise invalid_type(key, "an array", value)
    for i, function in enumerate(value):
        if type(function) is not dict:
            raise invalid_type(i, "an object", function).within(key)
        try:
            fields(function, _NAMED, _FUNCTION)
        except Invalid as exc:
            raise exc.within(i).within(key) from None


def tool_choice(value: Any, key: Key) -> None:
    if type(value) is str:
        if value not in ("none", "auto", "required"):
            raise invalid_value(key, value, ("none", "auto", "required"))
        return
    if type(value) is not dict:
        raise invalid_type(key, "a string or an object", value)
    try:
        kind = value.get("type")
        if kind == "function":
            _object(value, "function", _NAMED, _NONE)
        elif kind == "custom":
            _object(value, "custom", _NAMED, _NONE)
        elif kind == "allowed_tools":
            _object(value, "allowed_tools", _NONE, _ALLOWED_TOOLS)
        else:
            raise _bad_kind(kind, "type", TOOL_CHOICE_TYPES)
    except Invalid as exc:
        raise exc.within(key) from None


def function_call(value: Any, key: Key) -> None:
    """The older form of tool_choice."""
    if type(value) is str:
        if value not in ("none", "auto"):
            raise invalid_value(key, value, ("none", "auto"))
        return
    if type(value) is not dict:
        raise invalid_type(key, "a string or an object", value)
    try:
        fields(value, _NAMED, _NONE)
    except Invalid as exc:
        raise exc.within(key) from None


def response_format(value: Any, key: Key) -> None:
    if type(value) is not dict:
        raise invalid_type(key, "an object", value)
    try:
        kind = value.get("type")
        if kind == "json_schema":
            _object(value, "json_schema", _NAMED, _JSON_SCHEMA)
        elif kind != "text" and kind != "json_object":
            raise _bad_kind(kind, "type", ("text", "json_object", "json_schema"))
    except Invalid as exc:
        raise exc.within(key) from None


def stream_options(value: Any, key: Key) -> None:
    if type(value) is not dict:
        raise invalid_type(key, "an object", value)
    try:
        fields(value, _NONE, _STREAM_OPTIONS)
    except Invalid as exc:
        raise exc.within(key) from None
