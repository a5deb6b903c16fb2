"""apply_rewrite: a decision's rewrite applied to an OpenAI request body, in place.

Order: strip, then set (so a field one policy strips and another sets ends up set), then the max_tokens cap,
then the system messages. Chat bodies (`messages`) get all four; the legacy completions endpoint and embeddings
have no messages, so only strip, set and (completions only) the cap apply.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.policy.decision import Decision

_CHAT_ENDPOINTS = ("chat", "chat/completions", "messages")


def apply_rewrite(body: dict[str, Any], decision: Decision, endpoint: str | None = None) -> bool:
    """Rewrite `body` as the decision says; True when anything changed. `endpoint` defaults from the body."""
    plan = decision.rewrite
    if not plan:
        return False
    chat = "messages" in body if endpoint is None else endpoint.removeprefix("/v1/") in _CHAT_ENDPOINTS
    changed = False
    for name in plan.strip:
        if name in body:
            del body[name]
            changed = True
    for name, value in plan.set.items():
        if name not in body or body[name] != value:
            # A copy: the policy's own value must never be shared with (and mutated through) a request.
            body[name] = copy.deepcopy(value)
            changed = True
    if plan.max_tokens is not None and endpoint != "embeddings" and "input" not in body:
        changed |= _cap(body, plan.max_tokens)
    if chat and plan.system and isinstance(body.get("messages"), list):
        messages: list[Any] = body["messages"]
        at = 0
        while at < len(messages) and isinstance(messages[at], dict) and messages[at].get("role") in _SYSTEM_ROLES:
            at += 1
        added = [{"role": "system", "content": text} for text in plan.system]
        body["messages"] = messages[:at] + added + messages[at:]
        changed = True
    return changed


# "developer" is the system role of OpenAI's reasoning models: both lead a conversation's instructions.
_SYSTEM_ROLES = ("system", "developer")


def _cap(body: dict[str, Any], cap: int) -> bool:
    changed = False
    # Reasoning models reject max_tokens next to max_completion_tokens: cap the one the client used, and add
    # max_tokens only when it used neither.
    names = [n for n in ("max_tokens", "max_completion_tokens") if n in body] or ["max_tokens"]
    for name in names:
        current = body.get(name)
        if not isinstance(current, int) or isinstance(current, bool) or current > cap:
            body[name] = cap
            changed = True
    return changed
