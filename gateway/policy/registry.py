"""PolicyRegistry: the PolicySet in force, rebuilt when a policy file changes or a policy is saved through the API.

Files are polled (their paths, inodes, mtimes and sizes) rather than watched: polling works the same on every
platform, in containers and on network mounts, and one stat per file per second costs nothing. The inode is what
sees a Kubernetes ConfigMap update: the kubelet writes the new files into a new directory and swaps a symlink
(`..data`) to it, so the path read is another file, whose mtime (a coarse clock's) and size may be the old one's.
API-created policies live in the store; each process polls the store's policy revision, so a policy saved through
one replica is in force everywhere within a poll interval or two.

A rebuild compiles a whole new PolicySet and swaps one reference: a request reads `current` once and never sees
half a set. A rebuild that fails (a broken file, a name used twice) keeps the last good set, logs the problems,
sets gateway_policy_reload_failed and shows in /health/ready's details until a later rebuild succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway import tasks
from gateway.config import PoliciesConfig
from gateway.guardrails.build import CheckEnv, build_check, check_settings
from gateway.policy.evaluate import PolicySet
from gateway.policy.loader import load_policies, parse_policies, policy_files
from gateway.policy.model import Policy
from gateway.policy.problems import PolicyError, Problem
from gateway.store.base import PolicyStore, PolicyVersion, StoreUnavailable

logger = logging.getLogger("gateway.policy")


class PolicyRegistry:
    def __init__(
        self,
        config: PoliciesConfig,
        *,
        resolve: Callable[[str], Path],
        store: PolicyStore | None,
        registry: CollectorRegistry,
        check_env: CheckEnv | None = None,
    ) -> None:
        self.config = config
        self.check_env = check_env or CheckEnv()
        self.paths = [resolve(p) for p in config.paths]
        self.store = store
        self.current = PolicySet()
        self.file_policies: tuple[Policy, ...] = ()
        self.api_versions: dict[str, PolicyVersion] = {}
        self.error = ""  # what keeps the set in force from being the latest (files, store, set); empty when none
        self._errors: dict[str, str] = {}
        self.loaded_at = 0.0
        self._files_seen: tuple[tuple[str, int, int, int], ...] = ()
        self._revision_seen = -1
        self._poller: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failed = Gauge(
            "gateway_policy_reload_failed", "1 while the latest policy files or API policies fail to load.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self._reloads = Counter(
            "gateway_policy_reloads", "Policy set rebuilds, by outcome.", ["outcome"], registry=registry
        )
        self._count = Gauge("gateway_policies", "Policies in force.", registry=registry, multiprocess_mode="livemax")

    # -- life cycle -----------------------------------------------------------------------------------------------

    def load_files_now(self) -> None:
        """Load the files at start-up; a broken file here stops the gateway (raises PolicyError)."""
        # Seen before it is read: a file that changes in between is read again at the next poll, never missed.
        self._files_seen = self._file_signature()
        policy_set = load_policies(self.paths) if self.paths else PolicySet()
        self.check_guardrails(policy_set.policies)
        self.file_policies = policy_set.policies
        self._install(policy_set)

    async def open(self) -> None:
        self.load_files_now()
        await self._sync_store(force=True)
        if self.config.reload or self.store is not None:
            self._poller = tasks.spawn(self._poll(), name="policy-reload")

    async def close(self) -> None:
        await tasks.cancel(self._poller)

    async def refresh(self) -> None:
        """Check files and the store now (the poller's one step; the API calls it after a save)."""
        async with self._lock:
            if self.config.reload:
                # In a thread: listing the folders and a stat per file and folder, every poll_interval_s, held the
                # event loop ~1 ms a poll (bench/loop_holds.py, the shipped policies).
                signature = await asyncio.to_thread(self._file_signature)
                if signature != self._files_seen:
                    self._files_seen = signature
                    try:
                        policies = load_policies(self.paths).policies if self.paths else ()
                        self.check_guardrails(policies)
                    except PolicyError as exc:
                        self._set_error("files", _summary(exc.problems))
                    else:
                        self.file_policies = policies
                        self._set_error("files", "")
                        self._rebuild()
            await self._sync_store(force=False)

    # -- building -------------------------------------------------------------------------------------------------

    def compose(self, api_versions: dict[str, PolicyVersion]) -> PolicySet:
        """The set that the files in force plus these API policies make (raises PolicyError). The API uses it to
        refuse a policy that would not load, before saving it."""
        policies = list(self.file_policies)
        for version in api_versions.values():
            policies += parse_policies(version.source, f"api:{version.name}")
        files = tuple(str(p) for p in policy_files(self.paths, []))
        policy_set = PolicySet(policies, files=files)
        self.check_guardrails(policies)
        return policy_set

    def check_guardrails(self, policies: list[Policy] | tuple[Policy, ...]) -> None:
        """Build every guardrail the policies name, so that a bad setting fails the load, not a request."""
        problems: list[Problem] = []
        for policy in policies:
            for guardrail in policy.actions.guardrails:
                where = f"{policy.path}.actions.guardrails.{guardrail.name}" if policy.path else guardrail.name
                issues = check_settings(guardrail.name, guardrail.settings)
                if not issues and (guardrail.name != "json_schema" or "schema" in guardrail.settings):
                    try:
                        build_check(guardrail.name, guardrail.settings, self.check_env)
                    except ValueError as exc:
                        issues = [str(exc)]
                problems += [Problem(policy.source, policy.line, where, issue) for issue in issues]
        if problems:
            raise PolicyError(problems)

    def _rebuild(self) -> None:
        try:
            policy_set = self.compose(self.api_versions)
        except PolicyError as exc:
            self._set_error("set", _summary(exc.problems))
            return
        self._set_error("set", "")
        self._install(policy_set)

    def _install(self, policy_set: PolicySet) -> None:
        self.current = policy_set
        self.loaded_at = time.time()
        self._reloads.labels("ok").inc()
        self._count.set(len(policy_set))

    def _set_error(self, source: str, text: str) -> None:
        """What is wrong, by source (files, the store, the set they make together), until that source is fixed:
        an unrelated successful reload does not clear another source's failure."""
        before = self._errors.get(source, "")
        if text == before:
            return
        if text:
            self._errors[source] = text
            self._reloads.labels("failed").inc()
            logger.error("policies (%s) not reloaded, the previous set stays in force: %s", source, text)
        else:
            self._errors.pop(source, None)
            logger.warning("policies (%s) load again: %d in force", source, len(self.current))
        self.error = "; ".join(self._errors.values())
        self._failed.set(1 if self._errors else 0)

    async def _sync_store(self, *, force: bool) -> None:
        if self.store is None:
            return
        try:
            revision = await self.store.policies_revision()
            if revision == self._revision_seen and not force:
                return
            live = await self.store.live_policies()
        except StoreUnavailable as exc:
            self._set_error("store", f"policies in the store cannot be read: {exc}")
            return
        self._set_error("store", "")
        self._revision_seen = revision
        self.api_versions = {v.name: v for v in live}
        self._rebuild()

    def _file_signature(self) -> tuple[tuple[str, int, int, int], ...]:
        signature = []
        for file in policy_files(self.paths, []):
            try:
                stat = os.stat(file)  # through symlinks: the file that a read would open now
            except OSError:
                continue
            signature.append((str(file), stat.st_ino, stat.st_mtime_ns, stat.st_size))
        for path in self.paths:  # a file added to or removed from a folder changes the folder's mtime
            try:
                stat = os.stat(path)
                signature.append((str(path), stat.st_ino, stat.st_mtime_ns, -1))
            except OSError:
                signature.append((str(path), 0, 0, -1))
        return tuple(signature)

    async def _poll(self) -> None:
        interval = self.config.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop reloading for good
                logger.exception("policy reload failed")


def _summary(problems: list[Problem]) -> str:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(str(p) for p in problems[:5]) + more
