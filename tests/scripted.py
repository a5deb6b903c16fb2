"""A scripted chat model: an OpenAI-compatible upstream that answers as a model would, by rules simple enough for a
test to predict, so that agents (tool calls, handoffs, structured output) can run against the gateway end to end.

- With `response_format` json_schema: a JSON object that fits the schema (strings are "Paris", integers 21).
- With tools: the first tool whose name the latest user message mentions and that the conversation has not
  called yet is called, with arguments that fit its parameters.
- Otherwise: text, "Answer: " and the last tool result, or "Echo: " and the latest user message.

It speaks OpenAI's Responses API too (POST /v1/responses): it thinks first (a reasoning item, encrypted), then
answers "Native: " and the latest user text, whole or streamed, with usage (input_tokens 42).

`failing` makes every request answer 500 (a deployment that went down); `requests` keeps each body received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

USAGE = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}


def fill(schema: Any) -> Any:
    """A value that fits a JSON schema (the subset tools and structured output use)."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return fill(schema["anyOf"][0])
    if kind == "object" or "properties" in schema:
        return {name: fill(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [fill(schema.get("items"))]
    return {"string": "Paris", "integer": 21, "number": 21.5, "boolean": True}.get(str(kind))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def decide(body: dict[str, Any]) -> dict[str, Any]:
    """The assistant message the script answers `body` with."""
    messages = body.get("messages") or []
    called = {
        call["function"]["name"] for m in messages if m.get("role") == "assistant" for call in m.get("tool_calls") or ()
    }
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return {"role": "assistant", "content": orjson.dumps(fill(fmt["json_schema"].get("schema"))).decode()}
    for tool in body.get("tools") or ():
        function = tool.get("function") or {}
        name = function.get("name", "")
        if name and name in last_user and name not in called:
            arguments = orjson.dumps(fill(function.get("parameters")) or {}).decode()
            call = {"id": f"call_{len(messages)}_{name}", "type": "function",
                    "function": {"name": name, "arguments": arguments}}  # fmt: skip
            return {"role": "assistant", "content": None, "tool_calls": [call]}
    if messages and messages[-1].get("role") == "tool":
        return {"role": "assistant", "content": "Answer: " + _text(messages[-1].get("content"))}
    return {"role": "assistant", "content": "Echo: " + last_user}


@dataclass
class ScriptedModel:
    failing: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
            ]
        )

    async def chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        if self.failing:
            error = {"message": "scripted model is down", "type": "server_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=500)
        message = decide(body)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        model = body.get("model", "scripted")
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": USAGE,
            })  # fmt: skip
        return StreamingResponse(self._stream(model, message, finish, body), media_type="text/event-stream")

    async def _stream(self, model: str, message: dict[str, Any], finish: str, body: dict[str, Any]) -> Any:
        head = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            start = {"name": call["function"]["name"], "arguments": ""}
            yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function", "function": start}]})
            arguments = call["function"]["arguments"]
            for i in range(0, len(arguments), 8):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 8]}}]})
        else:
            text = message["content"]
            for i in range(0, len(text), 5):
                yield chunk({"content": text[i : i + 5]})
        yield chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def responses(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"path": "/v1/responses", **body})
        if self.failing:
            error = {"message": "scripted model is down", "type": "server_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=500)
        users = [item for item in body.get("input") or [] if item.get("role") == "user"]
        said = _text(users[-1].get("content")) if users else ""
        reasoning = {"id": "rs_up1", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA-thought"}
        part = {"type": "output_text", "text": "Native: " + said, "annotations": [], "logprobs": []}
        message = {"id": "msg_up1", "type": "message", "role": "assistant", "status": "completed", "content": [part]}
        usage = {"input_tokens": 42, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 7,
                 "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 49}  # fmt: skip
        response = {"id": "resp_upstream", "object": "response", "created_at": 1, "status": "completed",
                    "model": body.get("model"), "output": [reasoning, message], "usage": usage, "error": None,
                    "incomplete_details": None, "instructions": body.get("instructions"), "tools": [],
                    "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {},
                    "text": {"format": {"type": "text"}}, "previous_response_id": None, "store": False,
                    "temperature": 1.0, "top_p": 1.0}  # fmt: skip
        if not body.get("stream"):
            return JSONResponse(response)
        return StreamingResponse(self._response_events(response), media_type="text/event-stream")

    async def _response_events(self, response: dict[str, Any]) -> Any:
        text = response["output"][1]["content"][0]["text"]
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.output_item.added", "output_index": 0, "item": response["output"][0]},
            {"type": "response.output_item.done", "output_index": 0, "item": response["output"][0]},
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": {**response["output"][1], "status": "in_progress", "content": []},
            },  # fmt: skip
        ]
        events += [{"type": "response.output_text.delta", "item_id": "msg_up1", "output_index": 1, "content_index": 0,
                    "delta": text[i : i + 4], "logprobs": []} for i in range(0, len(text), 4)]  # fmt: skip
        events.append({"type": "response.completed", "response": response})
        for n, event in enumerate(events):
            event["sequence_number"] = n
            yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
