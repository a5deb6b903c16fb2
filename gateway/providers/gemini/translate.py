"""Pure translations between OpenAI's chat format and Google's Gemini API (`generateContent`): the request, its
JSON schemas, the whole answer, usage, finish reasons and tool call ids. The stream is translated in stream.py,
embeddings in embeddings.py, errors in errors.py.

Where the two APIs differ, these are the choices (each is also noted where it is made):

- system and developer messages, wherever they stand, become parts of `systemInstruction`;
- user and assistant turns become `user` and `model` contents; consecutive turns of one role are merged, and
  `tool` messages become `functionResponse` parts of a user turn, named after the earlier tool call of that id
  (Gemini matches results by name); the response is the tool's JSON object, else {"content": text}; n is
  candidateCount, each candidate a choice;
- images: data: URLs become `inlineData`, http(s) and gs:// URLs `fileData` with a MIME type guessed from the
  extension (image/jpeg when it says nothing); audio and base64 files become `inlineData`;
- JSON schemas (tool parameters, response_format json_schema) are sent as Gemini's OpenAPI-subset `Schema`
  (`parameters`, `responseSchema`), not as `parametersJsonSchema` / `responseJsonSchema`: the JSON Schema fields
  are accepted only by newer models, the subset by every Gemini model on both Google AI and Vertex AI. So
  schemas are rewritten to the subset: $ref/$defs inlined, `type: [T, "null"]` and null members of anyOf become
  `nullable`, oneOf becomes anyOf (looser), const a one-value enum, enum values strings, an implied type explicit
  (Gemini needs one), a recursive $ref a bare OBJECT, and keys or formats the subset lacks (additionalProperties,
  $schema, allOf of several, format uri...) are dropped. A tool without parameters is sent without `parameters`
  (Gemini refuses an object schema with no properties). response_format json_schema adds propertyOrdering,
  which Gemini 2.0 needs to keep the schema's key order; json_object is responseMimeType alone;
- tool_choice: auto/none/required -> AUTO/NONE/ANY, a named function -> ANY with allowedFunctionNames;
  parallel_tool_calls has no Gemini counterpart and is dropped;
- reasoning_effort -> thinkingConfig.thinkingBudget as Google's own OpenAI compatibility layer documents it
  (none 0, minimal and low 1024, medium 8192, high 24576); Gemini 3 accepts budgets for compatibility;
- presence/frequency penalties are sent only when non-zero (some models refuse them outright); logprobs, user,
  metadata, store, logit_bias and every other OpenAI field without a Gemini counterpart are dropped;
- thought signatures: Gemini 3 refuses a conversation whose function calls come back without the signature it
  gave them, and OpenAI's format has no place for one. So a call's signature rides in its tool call id
  (`call_..._ts_<base64url>`), which every client echoes, and goes back on the functionCall part; a model turn
  whose calls carry none (history from another model) gets the validator-skipping value Google documents for
  that case. Thought parts and signatures on text are dropped;
- in answers, text parts are joined, function calls become tool calls with arguments as a JSON string, finish
  reasons map as in FINISH_REASONS, and usage counts cached tokens in prompt_tokens and thoughts in
  completion_tokens, as OpenAI's does.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.context import Usage
from gateway.providers.base import UnsupportedRequest
from gateway.providers.gemini.schema import gemini_schema

# Gemini's finishReason -> OpenAI's finish_reason; anything else (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL...)
# has no OpenAI counterpart and ended the turn: "stop".
FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}  # fmt: skip
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
_SAMPLING = (
    ("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
    ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
)  # fmt: skip
TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# Documented for function calls the model did not produce itself (thought-signatures guide).
SKIP_SIGNATURE = "skip_thought_signature_validator"
SIGNATURE_MARK = "_ts_"

_MIME_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "mp3": "audio/mp3", "wav": "audio/wav",
    "mp4": "video/mp4", "txt": "text/plain",
}  # fmt: skip


# -- request ---------------------------------------------------------------------------------------------------------


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat request (already checked by gateway.api.validation)."""
    system, contents = _contents(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [{"functionDeclarations": [_declaration(tool, i) for i, tool in enumerate(tools)]}]
        calling = _function_calling(body.get("tool_choice"))
        if calling:
            out["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _contents(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, from the assistant turns read so far
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system += [{"text": text} for text in _texts(message.get("content"), f"{param}.content")]
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"), f"{param}.content")
        elif role == "assistant":
            gemini_role, parts = "model", _assistant_parts(message, param, names)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise UnsupportedRequest(
                    f"No earlier assistant message has a tool call with id {call_id!r}.", f"{param}.tool_call_id"
                )
            gemini_role, parts = "user", [_function_response(name, message.get("content"))]
        elif role == "function":  # OpenAI's deprecated function messages carry the name themselves
            gemini_role, parts = "user", [_function_response(str(message.get("name")), message.get("content"))]
        else:
            raise UnsupportedRequest(f"Unsupported role {role!r}.", f"{param}.role")
        if not parts:
            continue  # Gemini refuses a turn without parts
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": gemini_role, "parts": parts})
    for content in contents:
        if content["role"] == "model":
            _sign_first_call(content["parts"])
    return system, contents


def _texts(content: Any, param: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise UnsupportedRequest("Expected a string or an array of content parts.", param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal"):
            raise UnsupportedRequest(f"Only text parts are supported here, not {kind!r}.", f"{param}[{j}]")
        text = part.get(kind)
        if isinstance(text, str) and text:
            texts.append(text)
    return texts


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content, param)]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if isinstance(part.get("text"), str) and part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media_part(url, "image/jpeg", f"{where}.image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": str(audio.get("data") or "")}})
        elif kind == "file":
            parts.append(_file_part(part.get("file"), f"{where}.file"))
        else:
            raise UnsupportedRequest(f"Unsupported content part type {kind!r}.", where)
    return parts


def _media_part(url: Any, default_mime: str, param: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise UnsupportedRequest("A URL is required.", param)
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise UnsupportedRequest("A data: URL must be base64-encoded.", param)
        return {"inlineData": {"mimeType": header[5:-7] or default_mime, "data": data}}
    if not url.startswith(("http://", "https://", "gs://")):
        raise UnsupportedRequest("Expected a data:, http(s):// or gs:// URL.", param)
    return {"fileData": {"mimeType": _mime_type(urlsplit(url).path, default_mime), "fileUri": url}}


def _file_part(file: Any, param: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        # a file_id names a file stored at OpenAI, which means nothing to Google
        raise UnsupportedRequest("Only files given inline as file_data are supported.", param)
    mime = _mime_type(str(file.get("filename") or ""), "application/pdf")
    if data.startswith("data:"):
        return _media_part(data, mime, f"{param}.file_data")
    return {"inlineData": {"mimeType": mime, "data": data}}  # bare base64, as OpenAI also accepts


def _mime_type(path: str, default: str) -> str:
    # A fixed table rather than `mimetypes`, whose answers depend on the host's /etc/mime.types
    extension = path.rpartition(".")[2].lower() if "." in path else ""
    return _MIME_TYPES.get(extension, default)


def _assistant_parts(message: dict[str, Any], param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text} for text in _texts(message.get("content"), f"{param}.content")]
    calls = message.get("tool_calls")
    for j, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UnsupportedRequest("A tool call needs a function name.", f"{param}.tool_calls[{j}]")
        call_id = call.get("id")
        if isinstance(call_id, str):
            names[call_id] = function["name"]
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": _arguments(function)}}
        signature = signature_of(call_id) if isinstance(call_id, str) else None
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _arguments(function: dict[str, Any]) -> dict[str, Any]:
    raw = function.get("arguments")
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini's args is an object: a model's malformed arguments are kept, as text, rather than lost
    return parsed if isinstance(parsed, dict) else {"arguments": raw}


def _function_response(name: str, content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else "".join(_texts(content, "content"))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _sign_first_call(parts: list[dict[str, Any]]) -> None:
    # In a turn of parallel calls only the first carries the signature; a turn whose first call has none did not
    # come from this model through the gateway, and Gemini 3 would refuse it without the documented skip value.
    first = next((part for part in parts if "functionCall" in part), None)
    if first is not None and "thoughtSignature" not in first:
        first["thoughtSignature"] = SKIP_SIGNATURE


def _declaration(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UnsupportedRequest("Only function tools with a name are supported.", f"tools[{index}]")
    declaration: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        declaration["description"] = function["description"]
    parameters = gemini_schema(function.get("parameters"))
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _function_calling(tool_choice: Any) -> dict[str, Any] | None:
    if isinstance(tool_choice, str):
        mode = TOOL_CHOICE_MODES.get(tool_choice)
        if mode is None:
            raise UnsupportedRequest(f"Unsupported tool_choice {tool_choice!r}.", "tool_choice")
        return {"mode": mode}
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise UnsupportedRequest("tool_choice must name a function.", "tool_choice")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return None


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int):
        config["maxOutputTokens"] = max_tokens
    for openai_name, gemini_name in _SAMPLING:
        value = body.get(openai_name)
        # penalties only when non-zero: zero is the default, and some models refuse the field even then
        if value is not None and (value or not openai_name.endswith("penalty")):
            config[gemini_name] = value
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if sequences := [s for s in sequences if isinstance(s, str) and s]:
        config["stopSequences"] = sequences
    n = body.get("n")
    if isinstance(n, int) and n != 1:
        config["candidateCount"] = n
    _response_format(body.get("response_format"), config)
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget}
    return config


def _response_format(response_format: Any, config: dict[str, Any]) -> None:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        config["responseMimeType"] = "application/json"
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema, ordered=True)
    elif kind not in (None, "text"):
        raise UnsupportedRequest(f"Unsupported response_format type {kind!r}.", "response_format")


# -- answer ----------------------------------------------------------------------------------------------------------


def prompt_block(response: dict[str, Any]) -> str | None:
    """Why Gemini refused the prompt itself (no candidates, promptFeedback.blockReason), or None."""
    if response.get("candidates"):
        return None
    feedback = response.get("promptFeedback")
    if not isinstance(feedback, dict) or not (feedback.get("blockReason") or feedback.get("blockReasonMessage")):
        return None
    reason = str(feedback.get("blockReason") or "BLOCKED")
    detail = feedback.get("blockReasonMessage")
    suffix = f": {detail}" if isinstance(detail, str) and detail else "."
    return f"The prompt was blocked by Gemini's safety filters ({reason}){suffix}"


def to_openai(response: dict[str, Any], model: str, created: int, token: str) -> dict[str, Any]:
    """A whole GenerateContentResponse as an OpenAI chat.completion (the caller has checked prompt_block).
    `token` makes the ids of this answer (Gemini gives calls none): chatcmpl-<token>, call_<token>_<n>."""
    call_prefix = f"call_{token}_"
    counter = itertools.count()
    choices = []
    for position, candidate in enumerate(response.get("candidates") or []):
        if not isinstance(candidate, dict):
            continue
        text, calls = content_of(candidate, call_prefix, counter)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate.get("index", position),
                "message": message,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
                "logprobs": None,
            }
        )
    answer: dict[str, Any] = {
        "id": response.get("responseId") or f"chatcmpl-{token}",
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion") or model,
        "choices": choices,
    }
    if isinstance(response.get("usageMetadata"), dict):
        answer["usage"] = openai_usage(usage_of(response["usageMetadata"]))
    return answer


def content_of(candidate: dict[str, Any], call_prefix: str, counter: Iterator[int]) -> tuple[str | None, list[Any]]:
    """A candidate's text (thought parts left out) and its function calls as OpenAI tool calls."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict):
            call_id = tool_call_id(f"{call_prefix}{next(counter)}", part.get("thoughtSignature"))
            arguments = orjson.dumps(call.get("args") or {}).decode()
            function = {"name": call.get("name"), "arguments": arguments}
            calls.append({"id": call_id, "type": "function", "function": function})
    return ("".join(texts) if texts else None), calls


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    if has_tool_calls and reason in (None, "STOP"):
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def usage_of(metadata: dict[str, Any]) -> Usage:
    """Gemini's usageMetadata: promptTokenCount already counts cached tokens; candidatesTokenCount leaves out
    thoughts, which OpenAI counts in completion_tokens. Tool-use prompt tokens (built-in tools) are input too."""
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(metadata.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# -- tool call ids carry thought signatures --------------------------------------------------------------------------


def tool_call_id(base: str, signature: Any) -> str:
    """`base`, with the thought signature appended in URL-safe base64 (ids stay within [A-Za-z0-9_-])."""
    if not isinstance(signature, str) or not signature:
        return base
    return base + SIGNATURE_MARK + signature.replace("+", "-").replace("/", "_").rstrip("=")


def signature_of(call_id: str) -> str | None:
    """The thought signature a tool call id carries, in standard base64 as Gemini gave it, or None."""
    if not call_id.startswith("call_"):
        return None
    encoded = call_id.partition(SIGNATURE_MARK)[2]
    if not encoded:
        return None
    signature = encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4)
    try:
        base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None  # an id of another origin that happens to contain the mark
    return signature
