"""ChunkEncoder: what every encoder of OpenAI chat chunks into another API's stream shares — the reading of a
chat.completion.chunk. The relay hands it each payload (gateway/api/streaming.py, the Encoder protocol); a
subclass says what each piece of it becomes in its API's events (Anthropic's Messages, OpenAI's Responses)."""

from __future__ import annotations

from typing import Any

from gateway.context import Usage


class ChunkEncoder:
    """A subclass gives started/done/usage (its slots) and the hooks; `chunk` is written once, here."""

    started: bool  # its first event is out
    done: bool  # ended or failed: nothing more is sent
    usage: Usage | None

    def chunk(self, payload: bytes, parsed: dict[str, Any] | None) -> bytes | None:
        if parsed is None or self.done:
            return None  # not a JSON object (nothing the other API's stream could carry), or the stream has ended
        error = parsed.get("error")
        if error:
            return self.upstream_failed(error if isinstance(error, dict) else {"message": str(error)})
        out: list[bytes] = []
        if not self.started:
            self.begin(parsed.get("model"), out)
        usage = parsed.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = Usage.from_openai(usage)
        choices = parsed.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    self.text(text, out)
                refusal = delta.get("refusal")
                if isinstance(refusal, str) and refusal:
                    self.refusal(refusal, out)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        if isinstance(call, dict):
                            self.tool(call, out)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finished(finish)
        return b"".join(out) if out else None

    # -- hooks -------------------------------------------------------------------------------------------------

    def begin(self, model: Any, out: list[bytes]) -> None:
        """The stream's first events (`model`: what the first chunk says, may be anything)."""
        raise NotImplementedError

    def text(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def refusal(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        """A tool call's delta, as the chunk has it (its index, id, function name and arguments, any of them)."""
        raise NotImplementedError

    def finished(self, reason: str) -> None:
        """The chunk's finish_reason."""
        raise NotImplementedError

    def upstream_failed(self, error: dict[str, Any]) -> bytes:
        """An error chunk of the upstream's ({"error": ...}): the stream's failure event."""
        raise NotImplementedError
