"""Cluster URLs: seed nodes, credentials and TLS parsed without a Redis client, and `gateway check` naming what
is wrong with one in state.backend, limits.backend, cache.backend and cache.semantic.redis_url."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.redis_url import ClusterURL, is_cluster, is_redis, parse_cluster, redis_url_problem


def test_a_cluster_url_lists_its_seed_nodes() -> None:
    assert parse_cluster("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/") == ClusterURL(
        (("10.0.0.1", 7000), ("10.0.0.2", 7001)), None, None, tls=False
    )
    parsed = parse_cluster("rediss+cluster://gw:s%40cret@[::1]:7000")
    assert parsed == ClusterURL((("::1", 7000),), "gw", "s@cret", tls=True)
    assert parse_cluster("redis+cluster://:pw@h:1").password == "pw"
    assert parse_cluster("redis+cluster://pw@h:1") == ClusterURL((("h", 1),), None, "pw", tls=False)


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://h:7000/0", "redis+cluster://h", "redis+cluster://h:0", "redis+cluster://h:1,",
     "redis+cluster://h:1?timeout=3", "redis+cluster://:7000"],
)  # fmt: skip
def test_a_bad_cluster_url_is_a_problem_by_name(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_cluster(url)
    assert redis_url_problem(url)


def test_which_urls_are_redis() -> None:
    assert is_cluster("redis+cluster://h:1")
    assert is_cluster("rediss+cluster://h:1")
    assert not is_cluster("redis://h:1/0")
    assert is_redis("redis://h")
    assert is_redis("rediss://h")
    assert is_redis("redis+cluster://h:1")
    assert not is_redis("memory")
    for url in ("memory", "redis://h:6379/2", "rediss://h", "redis+cluster://a:1,b:2"):
        assert redis_url_problem(url) is None
    assert "redis+cluster://" in (redis_url_problem("memcached://x") or "")


def test_gateway_check_takes_cluster_urls_and_names_bad_ones() -> None:
    good = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    config = parse_config(
        f"state: {{backend: '{good}'}}\nlimits: {{backend: '{good}'}}\n"
        f"cache: {{backend: '{good}', semantic: {{backend: redis}}}}"
    )
    assert config.limits.backend == good
    bad = "redis+cluster://127.0.0.1"
    with pytest.raises(ConfigError) as caught:
        parse_config(
            f"state: {{backend: '{bad}'}}\nlimits: {{backend: '{bad}'}}\n"
            f"cache: {{backend: '{bad}', semantic: {{backend: redis, redis_url: '{bad}'}}}}"
        )
    paths = [path for path, _ in caught.value]
    assert sorted(paths) == ["cache.backend", "cache.semantic.redis_url", "limits.backend", "state.backend"]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:notaport/0", "redis://[::1:6379/0", "redis://:6379/0", "redis://h:6379/zero"]
)
def test_a_plain_url_the_client_could_not_parse_is_a_problem(url: str) -> None:
    assert redis_url_problem(url) is not None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/15", "rediss://h:6380", "redis://u:p%40ss@h:1/", "redis://h"])
def test_a_plain_url_the_client_parses_is_no_problem(url: str) -> None:
    assert redis_url_problem(url) is None
