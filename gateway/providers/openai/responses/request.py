"""OpenAI's Responses API in, the canonical OpenAI chat request out: the request half of POST /v1/responses.

The pipeline, the router and every provider only ever see a chat request, so any deployment serves a Responses
request and every filter sees it as it sees /v1/chat/completions. A malformed body, or one the chat format cannot
carry (a hosted tool such as web_search, background mode), raises InvalidRequest whose param is the field as
OpenAI names it (`input[2].content[0].type`, `tools[0].type`). The answer's way back is in answer.py and stream.py.

What is not the chat body's stays with the endpoint: store, metadata, previous_response_id, include, truncation
(their types are checked here all the same, as OpenAI checks them, so the endpoint can read them as they are).
"""

from __future__ import annotations

from typing import Any

from gateway import refusals
from gateway.errors import InvalidRequest
from gateway.providers.openai.responses import checks
from gateway.providers.openai.responses.items import items_to_messages, normalise_input, string_input

TOOL_CHOICES = ("none", "auto", "required")
FORMATS = ("text", "json_object", "json_schema")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
VERBOSITIES = ("low", "medium", "high")
TRUNCATIONS = ("auto", "disabled")
MIN_OUTPUT_TOKENS = 16  # OpenAI refuses a max_output_tokens below 16
METADATA_PAIRS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
# Fields OpenAI has that no chat request can carry, with what to say.
UNSUPPORTED = {
    "conversation": "conversations are not supported by this gateway; use previous_response_id.",
    "prompt": "prompt templates are not supported by this gateway.",
}
# Same name and meaning in a chat request: copied when they are strings.
PASSED_STRINGS = ("user", "safety_identifier", "prompt_cache_key")


def to_chat_request(
    body: dict[str, Any], history: list[dict[str, Any]], request_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the canonical OpenAI chat body, this turn's input items normalised with ids). `history`: the earlier
    turns' items, oldest first (each turn's input items, then its output items), which previous_response_id
    brings; they go into the chat messages after `instructions` (a system message; earlier turns' instructions
    are not carried over, as OpenAI documents) and before this turn's input. Raises InvalidRequest."""
    if not history and type(body) is dict and _PLAIN_FIELDS.issuperset(body):
        plain = _plain(body, request_id)
        if plain is not None:
            return plain
    if type(body) is not dict:
        raise InvalidRequest("The request body should be a JSON object.")
    if body.get("model") is None:
        raise refusals.missing("model")
    model = checks.string(body["model"], "model", non_empty=True)
    if body.get("background") is not None and checks.boolean(body["background"], "background"):
        raise checks.unsupported("background", "background mode is not supported by this gateway.")
    for name, problem in UNSUPPORTED.items():
        if body.get(name) is not None:
            raise checks.unsupported(name, problem)
    _endpoint_fields(body)
    if body.get("input") is None:
        raise refusals.missing("input")
    items = normalise_input(body["input"], request_id, history)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and checks.string(instructions, "instructions"):
        messages.append({"role": "system", "content": instructions})
    if history:
        messages.extend(items_to_messages(history + items))
    elif type(body["input"]) is str:  # items_to_messages' message for normalise_input's one item, made directly
        messages.append({"role": "user", "content": body["input"]})
    else:
        messages.extend(items_to_messages(items))
    if not messages:
        raise InvalidRequest(
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="input",
            code="empty_array",
        )
    chat: dict[str, Any] = {"model": model, "messages": messages}
    _options(body, chat)
    return chat, items


# The fields of the plainest request, `input` a string and a few scalar options (the SDK's `responses.create(model=,
# input=)`, a first turn), which _plain translates directly.
_PLAIN_FIELDS = frozenset(
    ("model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "store", "stream", "user")
)


def _plain(body: dict[str, Any], request_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """to_chat_request's result for a body of _PLAIN_FIELDS only, `input` a string and every value of its type and
    within its bounds, made without the general path's calls (some 17,000 instructions fewer); None for anything
    else, which the general path then translates or refuses with the error it names. The chat body is the general
    path's, key for key in the same order (tested against it)."""
    get = body.get
    model = get("model")
    text = get("input")
    if type(model) is not str or not model or type(text) is not str:
        return None
    if (store := get("store")) is not None and type(store) is not bool:
        return None
    messages: list[dict[str, Any]] = []
    if (instructions := get("instructions")) is not None:
        if type(instructions) is not str:
            return None
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.append({"role": "user", "content": text})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    if (stream := get("stream")) is not None:
        if type(stream) is not bool:
            return None
        if stream:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
    # checks.number's bounds; a NaN, a bool or a float where an int is wanted is left to it
    if (temperature := get("temperature")) is not None:
        if (type(temperature) is not int and type(temperature) is not float) or not 0 <= temperature <= 2:
            return None
        chat["temperature"] = temperature
    if (top_p := get("top_p")) is not None:
        if (type(top_p) is not int and type(top_p) is not float) or not 0 <= top_p <= 1:
            return None
        chat["top_p"] = top_p
    if (limit := get("max_output_tokens")) is not None:
        if type(limit) is not int or limit < MIN_OUTPUT_TOKENS:
            return None
        chat["max_completion_tokens"] = limit
    if (user := get("user")) is not None:
        if type(user) is not str:
            return None
        chat["user"] = user
    return chat, [string_input(text, request_id)]


def _endpoint_fields(body: dict[str, Any]) -> None:
    """The types of the fields the endpoint reads, checked once here with the others."""
    get = body.get
    if (store := get("store")) is not None:
        checks.boolean(store, "store")
    if (previous := get("previous_response_id")) is not None:
        checks.string(previous, "previous_response_id", non_empty=True)
    if (truncation := get("truncation")) is not None:
        checks.one_of(truncation, "truncation", TRUNCATIONS)
    if (include := get("include")) is not None:
        for i, entry in enumerate(checks.array(include, "include")):
            checks.string(entry, f"include[{i}]")
    if (metadata := get("metadata")) is not None:
        checks.obj(metadata, "metadata")
        if len(metadata) > METADATA_PAIRS:
            raise InvalidRequest(
                f"Invalid 'metadata': too many properties. Expected an object with at most {METADATA_PAIRS} "
                f"properties, but got an object with {len(metadata)} properties instead.",
                param="metadata",
                code="object_above_max_properties",
            )
        for key, value in metadata.items():
            checks.string(value, f"metadata.{key}")
            # OpenAI's bounds: what a policy matches on and the record keeps stays small.
            if len(key) > METADATA_KEY_CHARS:
                raise refusals.string_too_long("metadata", METADATA_KEY_CHARS, len(key))
            if len(value) > METADATA_VALUE_CHARS:
                raise refusals.string_too_long(f"metadata.{refusals.shown(key)}", METADATA_VALUE_CHARS, len(value))


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Every option of the request that the chat request has too, under the chat request's name."""
    get = body.get
    if (stream := get("stream")) is not None and checks.boolean(stream, "stream"):
        chat["stream"] = True
        # response.completed carries the usage: always ask the upstream for its usage chunk.
        chat["stream_options"] = {"include_usage": True}
    if (temperature := get("temperature")) is not None:
        chat["temperature"] = checks.number(temperature, "temperature", 0, 2)
    if (top_p := get("top_p")) is not None:
        chat["top_p"] = checks.number(top_p, "top_p", 0, 1)
    if (limit := get("max_output_tokens")) is not None:
        chat["max_completion_tokens"] = checks.integer(limit, "max_output_tokens", MIN_OUTPUT_TOKENS)
    for name in PASSED_STRINGS:
        if (value := get(name)) is not None:
            chat[name] = checks.string(value, name)
    if (tools := get("tools")) is not None and (chat_tools := _tools(tools)):
        chat["tools"] = chat_tools
    if (tool_choice := get("tool_choice")) is not None:
        choice = _tool_choice(tool_choice)
        if "tools" in chat:  # OpenAI's chat API refuses tool_choice without tools
            chat["tool_choice"] = choice
    if (parallel := get("parallel_tool_calls")) is not None:
        checks.boolean(parallel, "parallel_tool_calls")
        if "tools" in chat:  # and parallel_tool_calls likewise
            chat["parallel_tool_calls"] = parallel
    if (text := get("text")) is not None:
        _text(checks.obj(text, "text"), chat)
    if (reasoning := get("reasoning")) is not None:
        checks.obj(reasoning, "reasoning")
        if (effort := reasoning.get("effort")) is not None:
            chat["reasoning_effort"] = checks.one_of(effort, "reasoning.effort", EFFORTS)


def _tools(value: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(checks.array(value, "tools")):
        at = f"tools[{i}]"
        checks.obj(tool, at)
        kind = tool.get("type")
        if kind is None:
            raise refusals.missing(f"{at}.type")
        if checks.string(kind, f"{at}.type") != "function":
            # Hosted tools (web_search, file_search, code_interpreter, mcp...) run inside OpenAI's Responses API;
            # a chat request cannot ask for them, whichever deployment serves it.
            raise checks.unsupported(f"{at}.type", f"tool type '{kind}' is not supported: only function tools are.")
        if tool.get("name") is None:
            raise refusals.missing(f"{at}.name")
        function: dict[str, Any] = {"name": checks.string(tool["name"], f"{at}.name", non_empty=True)}
        if tool.get("description") is not None:
            function["description"] = checks.string(tool["description"], f"{at}.description")
        if tool.get("parameters") is not None:
            function["parameters"] = checks.obj(tool["parameters"], f"{at}.parameters")
        if tool.get("strict") is not None:
            function["strict"] = checks.boolean(tool["strict"], f"{at}.strict")
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any) -> str | dict[str, Any]:
    if type(value) is str:
        return checks.one_of(value, "tool_choice", TOOL_CHOICES)
    checks.obj(value, "tool_choice")
    kind = checks.kind_of(value, "tool_choice", ("function", "allowed_tools"))
    if kind == "function":
        if value.get("name") is None:
            raise refusals.missing("tool_choice.name")
        return {"type": "function", "function": {"name": checks.string(value["name"], "tool_choice.name")}}
    mode = checks.one_of(value.get("mode"), "tool_choice.mode", ("auto", "required"))
    allowed = []
    for i, tool in enumerate(checks.array(value.get("tools"), "tool_choice.tools")):
        at = f"tool_choice.tools[{i}]"
        checks.kind_of(checks.obj(tool, at), at, ("function",))
        if tool.get("name") is None:
            raise refusals.missing(f"{at}.name")
        allowed.append({"type": "function", "function": {"name": checks.string(tool["name"], f"{at}.name")}})
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}


def _text(text: dict[str, Any], chat: dict[str, Any]) -> None:
    """text.format as the chat request's response_format; text.verbosity as its verbosity."""
    if text.get("verbosity") is not None:
        chat["verbosity"] = checks.one_of(text["verbosity"], "text.verbosity", VERBOSITIES)
    fmt = text.get("format")
    if fmt is None:
        return
    checks.obj(fmt, "text.format")
    kind = checks.kind_of(fmt, "text.format", FORMATS)
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        for name in ("name", "schema"):
            if fmt.get(name) is None:
                raise refusals.missing(f"text.format.{name}")
        schema: dict[str, Any] = {
            "name": checks.string(fmt["name"], "text.format.name", non_empty=True),
            "schema": checks.obj(fmt["schema"], "text.format.schema"),
        }
        if fmt.get("description") is not None:
            schema["description"] = checks.string(fmt["description"], "text.format.description")
        if fmt.get("strict") is not None:
            schema["strict"] = checks.boolean(fmt["strict"], "text.format.strict")
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    # "text" is the chat default: nothing to say
