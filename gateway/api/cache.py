"""POST /admin/cache/purge {"project", "model", "key"} (admins): remove cached answers.

Every name given must match (at least one is given): a project's entries, a model group's (in every project, or
in one with `project`), or one entry by its key — the `x-gateway-cache-key` header of the answer that made or
served it. A whole project's purge empties its semantic index too.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.api.access import AdminEndpoint, authorize
from gateway.api.http import parse_json_object, read_body
from gateway.errors import InvalidRequest
from gateway.types import Receive, Scope

_MAX_BODY = 64 * 1024
_KEY = re.compile(r"[0-9a-f]{32}")


class CachePurgeEndpoint(AdminEndpoint):
    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        await authorize(self.gateway, scope, "POST /admin/cache/purge")
        cache = self.gateway.cache
        if cache is None:
            raise InvalidRequest("The response cache is off: name `cache` in the pipeline.")
        body = parse_json_object(await read_body(scope, receive, _MAX_BODY))
        names: dict[str, str | None] = {}
        for name in ("project", "model", "key"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequest(f"{name} must be a non-empty string.", param=name)
            names[name] = value
        unknown = sorted(set(body) - set(names))
        if unknown:
            raise InvalidRequest(f"Unknown field {unknown[0]!r}: give project, model or key.", param=unknown[0])
        if not any(names.values()):
            raise InvalidRequest("Give at least one of project, model and key.")
        key = names["key"]
        if key is not None and not _KEY.fullmatch(key):
            raise InvalidRequest("key must be 32 hex digits (an answer's x-gateway-cache-key).", param="key")
        removed = await cache.purge(names["project"], names["model"], key)
        return 200, {"object": "cache.purge", **names, "removed": removed}
