"""Where the text of a request or an answer sits, as slots a check can read and a redaction can rewrite in place.

Injection and abuse checks read the turns an end user can write: user, developer, tool and function messages
(and the legacy prompt, and embeddings input). The system prompt and earlier assistant turns are usually the
application's own, and scanning them for injection would flag every "You are a helpful assistant". Checks that
protect data (pii, keywords) and `length` read every role: a client can put anything anywhere.

Every function here takes any JSON shape without raising (the request validator runs first, but these also read
upstream answers and bodies a policy rewrote): what is not text where text belongs is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNTRUSTED_ROLES = frozenset({"user", "developer", "tool", "function"})


@dataclass(slots=True)
class Slot:
    holder: Any  # the dict or list that holds the text
    key: Any  # its key or index there
    role: str

    @property
    def text(self) -> str:
        value: str = self.holder[self.key]
        return value

    def replace(self, text: str) -> None:
        self.holder[self.key] = text


def prompt_slots(endpoint: str, body: object, *, every_role: bool = False) -> list[Slot]:
    """The request's text slots: untrusted roles only unless `every_role`."""
    slots: list[Slot] = []
    if not isinstance(body, dict):
        return slots
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            role = role if isinstance(role, str) else ""
            if not every_role and role not in UNTRUSTED_ROLES:
                continue
            _content_slots(message, "content", role, slots)
        return slots
    for field in ("prompt", "input"):  # legacy completions, embeddings
        value = body.get(field)
        if isinstance(value, str):
            slots.append(Slot(body, field, "user"))
        elif isinstance(value, list):
            slots += [Slot(value, i, "user") for i, item in enumerate(value) if isinstance(item, str)]
    return slots


def has_token_arrays(body: object) -> bool:
    """A legacy prompt or an embeddings input given as token ids: text no check can read."""
    if not isinstance(body, dict):
        return False
    for field in ("prompt", "input"):
        value = body.get(field)
        if isinstance(value, list) and any(not isinstance(item, str) for item in value):
            return True
    return False


def answer_slots(answer: object) -> list[Slot]:
    """The text of a whole answer: each choice's message content (chat) or text (legacy completions)."""
    slots: list[Slot] = []
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list):
        return slots
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            _content_slots(message, "content", "assistant", slots)
            if isinstance(message.get("refusal"), str) and message["refusal"]:
                slots.append(Slot(message, "refusal", "assistant"))
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():  # arguments a client acts on are answer text too
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    slots.append(Slot(function, "arguments", "assistant"))
        elif isinstance(choice.get("text"), str):
            slots.append(Slot(choice, "text", "assistant"))
    return slots


def _content_slots(holder: dict[str, Any], key: str, role: str, slots: list[Slot]) -> None:
    content = holder.get(key)
    if isinstance(content, str):
        if content:
            slots.append(Slot(holder, key, role))
    elif isinstance(content, list):  # content parts: only the text ones
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                slots.append(Slot(part, "text", role))


def joined(slots: list[Slot]) -> str:
    # A list, not a generator, and the holders read directly: this runs for every check of every request.
    return "\n".join([slot.holder[slot.key] for slot in slots])
