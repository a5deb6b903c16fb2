"""The policy registry: each source's failure (files, store) is reported until that source is fixed."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from gateway.config import PoliciesConfig
from gateway.policy.registry import PolicyRegistry
from gateway.store.base import PolicyVersion, StoreUnavailable
from tests.kubelet import ConfigMapVolume

pytestmark = pytest.mark.anyio


class FlakyStore:
    def __init__(self) -> None:
        self.down = True
        self.versions: list[PolicyVersion] = []

    async def policies_revision(self) -> int:
        if self.down:
            raise StoreUnavailable("connection refused")
        return len(self.versions)

    async def live_policies(self) -> list[PolicyVersion]:
        return list(self.versions)


async def test_store_down_at_start_is_reported_until_it_answers(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("policies: [{name: from-file, actions: {tag: {a: b}}}]\n")
    store = FlakyStore()
    metrics = CollectorRegistry()
    registry = PolicyRegistry(
        PoliciesConfig(paths=[str(tmp_path)]),
        resolve=Path,
        store=store,
        registry=metrics,  # type: ignore[arg-type]
    )
    await registry.open()
    try:
        assert [p.name for p in registry.current.policies] == ["from-file"]
        assert "cannot be read" in registry.error
        assert metrics.get_sample_value("gateway_policy_reload_failed") == 1
        store.down = False
        store.versions = [PolicyVersion("from-api", 1, "- {name: from-api, actions: {tag: {x: y}}}\n", "a", 0.0)]
        await registry.refresh()
        assert registry.error == ""
        assert sorted(p.name for p in registry.current.policies) == ["from-api", "from-file"]
        assert metrics.get_sample_value("gateway_policy_reload_failed") == 0

        # a broken file stays reported across an unrelated store change
        (tmp_path / "a.yaml").write_text("policies: [{name: from-file, bogus: 1}]\n")
        await registry.refresh()
        assert "bogus" in registry.error
        store.versions.append(PolicyVersion("other", 1, "- {name: other, actions: {tag: {x: z}}}\n", "a", 0.0))
        await registry.refresh()
        assert "bogus" in registry.error
        assert metrics.get_sample_value("gateway_policy_reload_failed") == 1
        assert sorted(p.name for p in registry.current.policies) == ["from-api", "from-file", "other"]
    finally:
        await registry.close()


def _policy(name: str) -> str:
    return f"policies: [{{name: {name}, actions: {{tag: {{a: b}}}}}}]\n"


def _names(registry: PolicyRegistry) -> list[str]:
    return sorted(p.name for p in registry.current.policies)


async def _wait_for(registry: PolicyRegistry, names: list[str]) -> None:
    """Until the poller has installed exactly these policies; the deadline is only reached by a failing test."""
    with anyio.fail_after(30):
        while _names(registry) != names:  # noqa: ASYNC110 - polling what the poller under test swaps
            await anyio.sleep(0.01)


@pytest.mark.parametrize("mount", ["folder", "file"])
async def test_a_configmap_update_is_hot_reloaded(tmp_path: Path, mount: str) -> None:
    """The kubelet's symlink swap (tests/kubelet.py), with the new files stamped with the old ones' mtime and of the
    same size, as a coarse clock and a one-letter edit make them: the swap itself must be seen. The old directory's
    removal breaks nothing, and later swaps (a key added, one removed) are picked up as well."""
    volume = ConfigMapVolume(tmp_path / "policies", {"a.yaml": _policy("one")})
    stamp = os.stat(tmp_path / "policies" / "a.yaml").st_mtime_ns
    path = tmp_path / "policies" if mount == "folder" else tmp_path / "policies" / "a.yaml"
    metrics = CollectorRegistry()
    registry = PolicyRegistry(
        PoliciesConfig(paths=[str(path)], poll_interval_s=0.01), resolve=Path, store=None, registry=metrics
    )
    await registry.open()
    try:
        assert _names(registry) == ["one"]
        volume.update({"a.yaml": _policy("two")}, mtime_ns=stamp)
        await _wait_for(registry, ["two"])
        volume.update({"a.yaml": _policy("six")}, mtime_ns=stamp)
        await _wait_for(registry, ["six"])
        if mount == "folder":
            volume.update({"a.yaml": _policy("six"), "b.yaml": _policy("ten")}, mtime_ns=stamp)
            await _wait_for(registry, ["six", "ten"])
            volume.update({"b.yaml": _policy("ten")}, mtime_ns=stamp)
            await _wait_for(registry, ["ten"])
        assert registry.error == ""
        assert metrics.get_sample_value("gateway_policy_reload_failed") == 0
        # The files the set names are the mounted paths, never the timestamped directory that the next swap removes.
        assert all("..2026" not in file for file in registry.current.files)
    finally:
        await registry.close()
