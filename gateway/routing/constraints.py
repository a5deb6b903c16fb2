"""Where a request may go: set by a policy (gateway/policy/decision.py) or the request's headers, read by the
router. A leaf: the policy, the context and the router share the type without importing one another."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RouteConstraints:
    """Limits on where a request may go; empty means no limit. Constraints from several sources intersect."""

    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()  # a deployment must carry all of these
