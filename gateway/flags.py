"""Feature flags: every optional capability switched globally and per project, from the config and the API.

    cost_tracking        record each request's cost                           (default true)
    similarity           compare each prompt with the project's recent ones   (default true; needs similarity.enabled)
    content_logging      off | redacted | full                                (default telemetry.content.mode)
    cache                off | exact | semantic: the response cache           (default off)
    sink.<name>          export records to the sink `name`                    (default true)
    guardrail.<check>    run the guardrail check `check` where policies ask   (default true)

A value is looked up for a project: the project's API override, then its config value, then the global API
override, then the global config value, then the default. Each worker keeps the resolved values in memory and
polls the store's revision (one cheap query) to pick up what the API changed in any worker; a lookup on the request
path is two dict reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from gateway.config.guardrails import GUARDRAIL_SETTINGS
from gateway.config.telemetry import FLAG_PREFIXES, FeaturesConfig, FlagValue, flag_problem
from gateway.errors import ServiceUnavailable
from gateway.store.rows import FlagOverride
from gateway.tasks import cancel, spawn

logger = logging.getLogger("gateway.features")
Record = dict[str, Any]


@runtime_checkable
class FlagStore(Protocol):
    async def feature_flags(self) -> list[FlagOverride]:
        """Every override in force."""

    async def set_feature_flag(self, project: str, flag: str, value: FlagValue | None, *, author: str) -> None:
        """Set an override; None removes it."""

    async def feature_flags_revision(self) -> int:
        """Grows whenever an override is set or removed."""


class Features:
    def __init__(
        self,
        config: FeaturesConfig,
        *,
        content_mode: str = "off",
        sinks: Iterable[str] = (),
        store: FlagStore | None = None,
    ) -> None:
        self.config = config
        self.sinks = tuple(sinks)
        self.store = store
        self.defaults: dict[str, FlagValue] = {
            "cost_tracking": True,
            "similarity": True,
            "content_logging": content_mode,
            "cache": "off",
        }
        self._overrides: list[FlagOverride] = []
        self._revision = -1
        self._task: asyncio.Task[None] | None = None
        self.error = ""  # the last failure to read overrides; the previous values stay in force
        self._resolve()

    # -- the request path ---------------------------------------------------------------------------------------

    def value(self, flag: str, project: str) -> FlagValue:
        values = self._projects.get(project, self._global)
        found = values.get(flag)
        if found is None:
            return True if flag.startswith(FLAG_PREFIXES) else self.defaults.get(flag, False)
        return found

    def enabled(self, flag: str, project: str) -> bool:
        return self.value(flag, project) is True

    def content_mode(self, project: str) -> str:
        return str(self.value("content_logging", project))

    def record_flags(self, project: str) -> tuple[bool, bool, str]:
        """enabled("cost_tracking"), enabled("similarity") and content_mode() of a project at once, written out:
        the recorder reads the three for every request, and each through value() was two calls."""
        values = self._projects.get(project, self._global)
        cost = values.get("cost_tracking")
        similarity = values.get("similarity")
        content = values.get("content_logging")
        defaults = self.defaults
        return (
            (cost if cost is not None else defaults["cost_tracking"]) is True,
            (similarity if similarity is not None else defaults["similarity"]) is True,
            str(content if content is not None else defaults["content_logging"]),
        )

    def any_off(self, prefix: str) -> bool:
        """Whether some project (or all) turned off a flag starting with `prefix`: lets a caller skip the lookups."""
        return prefix in self._off_prefixes

    # -- resolution --------------------------------------------------------------------------------------------

    def _resolve(self) -> None:
        global_values: dict[str, FlagValue] = {**self.defaults, **self.config.defaults}
        api: dict[str, dict[str, FlagValue]] = {}
        for o in self._overrides:
            api.setdefault(o.project, {})[o.flag] = o.value
        global_values.update(api.get("", {}))
        projects: dict[str, dict[str, FlagValue]] = {}
        for project in {*self.config.projects, *api} - {""}:
            projects[project] = {**global_values, **self.config.projects.get(project, {}), **api.get(project, {})}
        off: set[str] = set()
        for values in (global_values, *projects.values()):
            off.update(p for p in FLAG_PREFIXES for f, v in values.items() if f.startswith(p) and v is False)
        self._global, self._projects, self._off_prefixes = global_values, projects, frozenset(off)
        # The cache flag by project, and for every other project: read by the cache stage on every request of a
        # project whose cache is on, one dict lookup instead of value()'s call.
        self.cache_modes: dict[str, FlagValue] = {project: self.value("cache", project) for project in projects}
        self.cache_mode = self.value("cache", "")

    def snapshot(self, project: str | None) -> dict[str, dict[str, Any]]:
        """Every flag's value for a project (or the global values) and where it comes from."""
        names = [*self.defaults, *(f"sink.{s}" for s in self.sinks), *(f"guardrail.{c}" for c in GUARDRAIL_SETTINGS)]
        api = {(o.project, o.flag): o.value for o in self._overrides}
        config_project: Mapping[str, FlagValue] = self.config.projects.get(project or "", {})
        out: dict[str, dict[str, Any]] = {}
        for flag in names:
            if project and (project, flag) in api:
                source = "api:project"
            elif project and flag in config_project:
                source = "config:project"
            elif ("", flag) in api:
                source = "api"
            elif flag in self.config.defaults:
                source = "config"
            else:
                source = "default"
            out[flag] = {"value": self.value(flag, project or ""), "source": source}
        return out

    # -- the store ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self.store is None:
            return
        await self.refresh()
        self._task = spawn(self._poll(), name="feature-flags")

    async def close(self) -> None:
        await cancel(self._task)

    async def refresh(self) -> None:
        """Read the overrides again if the store's revision moved; a failure keeps the values in force."""
        if self.store is None:
            return
        try:
            revision = await self.store.feature_flags_revision()
            if revision != self._revision:
                overrides = await self.store.feature_flags()
                self._overrides = [o for o in overrides if flag_problem(o.flag, o.value, self.sinks) is None]
                self._revision = revision
                self._resolve()
            self.error = ""
        except Exception as exc:  # noqa: BLE001 - a store that is down leaves the flags as they were
            if not self.error:
                logger.warning("feature flags: cannot read the overrides, keeping the current values: %s", exc)
            self.error = type(exc).__name__

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            await self.refresh()

    async def set(self, flag: str, value: FlagValue | None, *, project: str, author: str) -> None:
        """Save an override (None removes it) and apply it in this worker at once; the others on their next poll."""
        if self.store is None:
            raise ServiceUnavailable("Feature flags set through the API need a store (telemetry.store).")
        await self.store.set_feature_flag(project, flag, value, author=author)
        await self.refresh()


class ProjectGate:
    """A sink behind its `sink.<name>` flag: records of projects that turned the sink off never reach it."""

    def __init__(self, inner: Any, features: Features, flag: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.features = features
        self.flag = flag

    async def write(self, records: Sequence[Record]) -> None:
        features = self.features
        if features.any_off("sink."):
            records = [r for r in records if features.enabled(self.flag, r["project"])]
        if records:
            await self.inner.write(records)
