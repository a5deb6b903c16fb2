"""Config keys: an id that reveals nothing of the secret and stays the same across restarts and processes, in
records, limits and usage; `limits.rules[].match` finds a key by its name as well as by its id."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.config import AuthConfig, GatewayConfig, KeyConfig
from gateway.identity.authenticator import Authenticator
from gateway.identity.keys import config_key_id
from tests.conftest import KEY, running
from tests.integration.helpers import record_of

ADMIN = "sk-admin-cfgkeys"
PIPELINE = ["auth", "ratelimit", "route"]
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
OTHER = "sk-other-key"


def hex_digests(secret: str) -> list[str]:
    """Every common hash of the secret, in hex: an id must be a prefix of none (nor contain one's prefix)."""
    data = secret.encode()
    names = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_512", "blake2b", "blake2s")
    return [hashlib.new(name, data).hexdigest() for name in names]


def id_of(name: str, secret: str) -> str:
    auth = Authenticator(AuthConfig(keys=[KeyConfig(name=name, key=secret)]), None)
    (principal,) = auth.principals.values()
    return principal.key_id


def text(rng: random.Random, size: int) -> str:
    alphabet = "abcdefABCDEF0123456789-_ /:é\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, size)))


def test_a_config_key_id_depends_on_its_name_only() -> None:
    rng = random.Random(13)
    # Names and secrets alike, and a secret equal to its name: still nothing of the secret in the id.
    cases = [(text(rng, 40), text(rng, 60)) for _ in range(300)] + [("sk-same", "sk-same"), ("a", "a")]
    for name, secret in cases:
        key_id = id_of(name, secret)
        assert key_id == config_key_id(name)
        assert key_id == id_of(name, secret + "x")  # another secret, the same id: the id carries nothing of it
        body = key_id.removeprefix("ck_")
        for digest in hex_digests(secret):
            assert not digest.startswith(body[:8])
            assert body not in digest


def test_a_key_given_by_its_digest_has_the_same_id() -> None:
    by_digest = KeyConfig(name="ops", key_sha256=hashlib.sha256(b"sk-ops").hexdigest())
    auth = Authenticator(AuthConfig(keys=[by_digest]), None)
    assert [p.key_id for p in auth.principals.values()] == [id_of("ops", "sk-ops")]


def test_the_id_is_the_same_in_every_process() -> None:
    code = "from gateway.identity.keys import config_key_id; print(config_key_id('team-a/ci bot'))"
    ids = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True,
                       check=True).stdout.strip()
        for seed in ("1", "2", "random")
    }  # fmt: skip
    assert ids == {config_key_id("team-a/ci bot")}


def test_records_usage_and_traces_show_the_new_id_never_the_hash(
    make_config: Callable[..., GatewayConfig], tmp_path: Path
) -> None:
    limits = {"rules": [{"scope": "key", "match": "tester", "rpm": 3}]}
    config = make_config(pipeline=PIPELINE, limits=limits, auth={"admin_key": ADMIN})
    old_id = hashlib.sha256(KEY.encode()).hexdigest()[:12]
    with running(config) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        record = record_of(tmp_path / "gateway.db", response.headers["x-request-id"], timeout=30)
        assert (record["key_name"], record["key_id"]) == ("tester", config_key_id("tester"))
        admin = {"authorization": f"Bearer {ADMIN}"}
        traces = httpx.get(f"{url}/api/v1/traces", params={"key": "tester"}, headers=admin)
        assert traces.status_code == 200
        assert old_id not in traces.text
        assert [t["key_id"] for t in traces.json()["data"]] == [config_key_id("tester")]
        # /admin/usage finds a config key by its name or its id, with the rule that matches it by name.
        for ident in ("tester", config_key_id("tester")):
            usage = httpx.get(f"{url}/admin/usage", params={"scope": "key", "id": ident}, headers=admin).json()
            assert usage["id"] == config_key_id("tester")
            (rpm,) = usage["rate_limits"]
            assert (rpm["limit"], rpm["remaining"]) == (3, 2)
        assert (
            old_id not in httpx.get(f"{url}/admin/usage", params={"scope": "key", "id": "tester"}, headers=admin).text
        )


@pytest.mark.parametrize("match", ["tester", config_key_id("tester")])
def test_a_key_rule_matches_a_config_key_by_name_or_id(make_config: Callable[..., GatewayConfig], match: str) -> None:
    keys = [{"name": "tester", "key": KEY, "project": "p1"}, {"name": "other", "key": OTHER, "project": "p1"}]
    limits = {"rules": [{"scope": "key", "match": match, "rpm": 2, "burst": 2}]}
    with running(make_config(pipeline=PIPELINE, limits=limits, auth={"keys": keys})) as (url, _):

        def post(key: str) -> int:
            headers = {"authorization": f"Bearer {key}"}
            return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30).status_code

        assert [post(KEY) for _ in range(3)] == [200, 200, 429]
        assert [post(OTHER) for _ in range(3)] == [200, 200, 200]  # the rule names another key: not this one


def test_a_key_rule_matches_a_virtual_key_by_name_or_id(make_config: Callable[..., GatewayConfig]) -> None:
    limits = {"rules": [{"scope": "key", "match": "bot", "rpm": 1, "burst": 1}]}
    with running(make_config(pipeline=PIPELINE, limits=limits, auth={"admin_key": ADMIN})) as (url, _):
        admin = {"authorization": f"Bearer {ADMIN}"}
        bot = httpx.post(f"{url}/admin/keys", json={"name": "bot", "project": "p1"}, headers=admin).json()
        other = httpx.post(f"{url}/admin/keys", json={"name": "not-bot", "project": "p1"}, headers=admin).json()

        def post(key: str) -> int:
            headers = {"authorization": f"Bearer {key}"}
            return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30).status_code

        assert [post(bot["key"]) for _ in range(2)] == [200, 429]
        assert [post(other["key"]) for _ in range(2)] == [200, 200]


def test_a_config_key_seen_once_is_found_again_without_its_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token whose digest matched a config key is kept by the token (no SHA-256 for its next requests); a token
    that matched nothing is never kept, so what callers send cannot grow it."""
    import asyncio

    from gateway.errors import AuthenticationFailed
    from gateway.identity import authenticator

    by_digest = KeyConfig(name="ops", key_sha256=hashlib.sha256(b"sk-ops").hexdigest())
    auth = Authenticator(AuthConfig(keys=[by_digest, KeyConfig(name="ci", key="sk-ci")]), None)
    digests: list[str] = []
    digest = authenticator.key_digest
    monkeypatch.setattr(authenticator, "key_digest", lambda token: digests.append(token) or digest(token))

    async def identify(token: str) -> str:
        try:
            return (await auth.identify(token)).name
        except AuthenticationFailed:
            return "refused"

    tokens = ["sk-ops", "sk-ci", "sk-wrong", "sk-ops", "sk-ci", "sk-wrong", "sk-op"]
    assert [asyncio.run(identify(t)) for t in tokens] == ["ops", "ci", "refused", "ops", "ci", "refused", "refused"]
    assert digests == ["sk-ops", "sk-ci", "sk-wrong", "sk-wrong", "sk-op"]
    assert sorted(auth.seen) == ["sk-ci", "sk-ops"]
