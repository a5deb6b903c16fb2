"""The policy registry: each source's failure (files, store) is reported until that source is fixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import PoliciesConfig
from gateway.policy.registry import PolicyRegistry
from gateway.store.base import PolicyVersion, StoreUnavailable

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
