"""A cached answer streamed back, and a streamed answer assembled to be cached.

A hit for a streamed request is replayed as the chunks an upstream would have sent, in OpenAI's chat (or legacy
completion) chunk format, usage last: the ingress's encoder turns them into its API's events (OpenAI's SSE with
`[DONE]`, Anthropic's Messages events, the Responses API's events), exactly as it does an upstream's stream.
Each choice's text goes in one chunk: a cached answer has nothing to wait for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.context import Usage


def replay_chunks(endpoint: str, answer: dict[str, Any], *, usage: bool = True) -> list[bytes]:
    """The chunk payloads of a whole chat completion (or legacy completion), usage in the last (when `usage`: what
    the client asked for with stream_options.include_usage)."""
    base = {"id": answer.get("id", ""), "created": answer.get("created", 0), "model": answer.get("model", "")}
    if answer.get("system_fingerprint"):
        base["system_fingerprint"] = answer["system_fingerprint"]
    chunks: list[dict[str, Any]] = []
    choices = answer.get("choices") or []
    if endpoint == "completions":
        kind = {"object": "text_completion", **base}
        for choice in choices:
            index = choice.get("index", 0)
            chunks.append({**kind, "choices": [{"index": index, "text": choice.get("text") or "", "logprobs": None,
                                                "finish_reason": None}]})  # fmt: skip
            chunks.append({**kind, "choices": [{"index": index, "text": "", "logprobs": None,
                                                "finish_reason": choice.get("finish_reason")}]})  # fmt: skip
    else:
        kind = {"object": "chat.completion.chunk", **base}
        for choice in choices:
            index = choice.get("index", 0)
            message = choice.get("message") or {}
            first: dict[str, Any] = {"role": message.get("role") or "assistant", "content": ""}
            chunks.append(_chat(kind, index, first, None))
            if message.get("content"):
                chunks.append(_chat(kind, index, {"content": message["content"]}, None))
            if message.get("refusal"):
                chunks.append(_chat(kind, index, {"refusal": message["refusal"]}, None))
            calls = message.get("tool_calls") or []
            for position, call in enumerate(calls):
                delta_call = {"index": position, **{k: v for k, v in call.items() if k != "index"}}
                chunks.append(_chat(kind, index, {"tool_calls": [delta_call]}, None))
            chunks.append(_chat(kind, index, {}, choice.get("finish_reason") or "stop"))
    if usage and answer.get("usage"):
        chunks.append({**kind, "choices": [], "usage": answer["usage"]})
    return [orjson.dumps(chunk) for chunk in chunks]


def _chat(kind: dict[str, Any], index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {**kind, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}


async def replay(payloads: list[bytes]) -> AsyncIterator[bytes]:
    for payload in payloads:
        yield payload


class StreamAssembler:
    """The chunks of a streamed answer, put together into the whole answer an unstreamed request would have got.
    `complete` says whether every choice finished (a stream cut short is never cached)."""

    __slots__ = ("choices", "created", "endpoint", "id", "model", "system_fingerprint")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.id = ""
        self.created = 0
        self.model = ""
        self.system_fingerprint: str | None = None
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.id:
            self.id = str(chunk.get("id") or "")
            self.created = chunk.get("created") or 0
            self.model = str(chunk.get("model") or "")
            fingerprint = chunk.get("system_fingerprint")
            self.system_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = {"text": [], "refusal": [], "role": "assistant", "calls": {},
                                               "finish": None}  # fmt: skip
            if self.endpoint == "completions":
                text = choice.get("text")
                if isinstance(text, str):
                    state["text"].append(text)
            else:
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    self._delta(state, delta)
            finish = choice.get("finish_reason")
            if finish:
                state["finish"] = finish

    @staticmethod
    def _delta(state: dict[str, Any], delta: dict[str, Any]) -> None:
        if isinstance(delta.get("role"), str):
            state["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            state["text"].append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            state["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            held = state["calls"].setdefault(call.get("index", 0), {"id": "", "type": "function", "name": "",
                                                                    "arguments": []})  # fmt: skip
            if call.get("id"):
                held["id"] = call["id"]
            if call.get("type"):
                held["type"] = call["type"]
            function = call.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    held["name"] += function["name"]
                if isinstance(function.get("arguments"), str):
                    held["arguments"].append(function["arguments"])

    @property
    def complete(self) -> bool:
        return bool(self.choices) and all(state["finish"] for state in self.choices.values())

    def answer(self, usage: Usage | None) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            if self.endpoint == "completions":
                choices.append({"index": index, "text": "".join(state["text"]), "logprobs": None,
                                "finish_reason": state["finish"]})  # fmt: skip
                continue
            message: dict[str, Any] = {"role": state["role"], "content": "".join(state["text"]) or None}
            if state["refusal"]:
                message["refusal"] = "".join(state["refusal"])
            if state["calls"]:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": c["type"],
                        "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
                    }
                    for _, c in sorted(state["calls"].items())
                ]
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
        answer: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.endpoint == "completions" else "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            answer["system_fingerprint"] = self.system_fingerprint
        if usage is not None:
            answer["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
        return answer
