"""The bench's HTTP client side: the chat request, the checks of an answer, and one timed stream."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from upstream import CONTENT

CHAT = "/v1/chat/completions"


def chat_body(model: str, *, stream: bool = False, usage: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello in one short sentence."},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def headers(key: str) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {key}"}


def parse_events(raw: bytes) -> list[bytes]:
    return [e[6:] for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.startswith(b"data: ")]


def check_whole(client: httpx.Client, url: str, model: str, key: str) -> str | None:
    r = client.post(url + CHAT, content=chat_body(model), headers=headers(key))
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    data = orjson.loads(r.content)
    if data.get("object") != "chat.completion":
        return f"not a chat.completion: {r.text[:300]}"
    if data["choices"][0]["message"]["content"] != CONTENT:
        return f"unexpected content: {data['choices'][0]['message']['content']!r}"
    if not (data.get("usage") or {}).get("total_tokens"):
        return "no usage block"
    return None


def check_stream(client: httpx.Client, url: str, model: str, key: str, *, usage: bool) -> str | None:
    r = client.post(url + CHAT, content=chat_body(model, stream=True, usage=usage), headers=headers(key))
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    if not r.headers.get("content-type", "").startswith("text/event-stream"):
        return f"content-type {r.headers.get('content-type')!r}"
    events = parse_events(r.content)
    if not events or events[-1] != b"[DONE]":
        return "the stream does not end with data: [DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    if any(c.get("object") != "chat.completion.chunk" for c in chunks):
        return "an event is not a chat.completion.chunk"
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    if text != CONTENT:
        return f"unexpected content {text!r}"
    has_usage = any(c.get("usage") for c in chunks)
    if usage and not has_usage:
        return "include_usage was asked for and no usage chunk came"
    return None


def one_stream(client: httpx.Client, url: str, model: str, key: str) -> dict[str, float] | str:
    """Times one stream: TTFB (first bytes), first token (first non-empty content), total ([DONE]), in ms."""
    buffer = b""
    ttfb = first_token = None
    content: list[str] = []
    done = False
    start = time.perf_counter()
    with client.stream("POST", url + CHAT, content=chat_body(model, stream=True), headers=headers(key)) as r:
        if r.status_code != 200:
            return f"HTTP {r.status_code}"
        for raw in r.iter_raw():
            now = time.perf_counter()
            if ttfb is None:
                ttfb = now - start
            buffer += raw
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                payload = event[6:]
                if payload == b"[DONE]":
                    done = True
                    continue
                chunk = orjson.loads(payload)
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        content.append(piece)
                        if first_token is None:
                            first_token = now - start
    total = time.perf_counter() - start
    if not done or "".join(content) != CONTENT or ttfb is None or first_token is None:
        return "incomplete stream (no [DONE], or content not the mock's)"
    return {"ttfb": ttfb * 1000, "first_token": first_token * 1000, "total": total * 1000}
