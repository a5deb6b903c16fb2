"""A cached answer, and its bytes in a shared backend."""

from __future__ import annotations

from typing import NamedTuple

import orjson

# Bytes an entry of the memory backend holds beside its body: its tuple of fields, their strings and floats, the
# expiry's tuple, the key and its slot in the LRU; measured at ~590 with tracemalloc (test_kept_memory.py). At 256,
# memory_max_mb held 1.5 times what it said for answers of 600 bytes.
ENTRY_OVERHEAD = 640
# An Entry's fields as a plain tuple: what the memory backend holds. A plain tuple of str, bytes and numbers is
# untracked by the garbage collector at its first pass; an Entry (a tuple subclass) stays tracked and is traversed
# by every later full collection, for as long as it is kept.
EntryFields = tuple[bytes, str, float, str, str, str, int, int, "float | None"]


class Entry(NamedTuple):
    """One answer as it was sent, whole (a streamed answer is assembled first), with what a hit's record says."""

    body: bytes  # the answer's JSON in OpenAI's shape: a chat completion, a completion or an embeddings list
    record_id: str  # the record of the request whose answer this is
    created: float  # epoch seconds
    project: str
    model: str  # the model group asked for (the key's); `served` is the upstream's model name
    served: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # what the upstream call cost: what each hit saves

    @property
    def size(self) -> int:
        return len(self.body) + ENTRY_OVERHEAD

    def encode(self) -> bytes:
        """A header line of JSON (orjson writes no newline), then the body as it is."""
        head = orjson.dumps(list(self[1:]))
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry, or None when the bytes are not one (written by another version, or damaged)."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            return None
        try:
            fields = orjson.loads(head)
            return cls(body, *fields) if isinstance(fields, list) and len(fields) == len(cls._fields) - 1 else None
        except (orjson.JSONDecodeError, TypeError):
            return None
