"""What a gateway loads only when its config uses it: numpy (some 15 MB of a process; similarity and the abuse
check) and PyJWT with cryptography (some 11 MB; JWT auth). A fresh interpreter, since this one has imported both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import yaml
from gateway.app import build_app
from gateway.config import parse_config

data = {
    "providers": {"mock": {"type": "mock"}},
    "models": {"m": {"deployments": [{"provider": "mock", "model": "m"}]}},
    "pipeline": ["auth", "route"],
    "auth": {"mode": "keys", "keys": [{"name": "k", "key": "sk-test-0123456789"}]},
    "telemetry": {"store": "none"},
}
for key, value in EXTRA.items():
    data[key] = {**data.get(key, {}), **value}
build_app(parse_config(yaml.safe_dump(data), source="t.yaml", env={}, base_dir="."))
print(sorted(name for name in ("numpy", "jwt", "cryptography") if name in sys.modules))
"""


def imported(extra: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("EXTRA", extra)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_gateway_without_similarity_abuse_or_jwt_imports_neither_numpy_nor_jwt() -> None:
    assert imported("{}") == "[]"


def test_what_the_config_uses_is_imported_when_the_gateway_is_built_not_on_a_request(tmp_path: Path) -> None:
    similarity = f'{{"similarity": {{"enabled": True}}, "telemetry": {{"store": "sqlite:///{tmp_path}/g.db"}}}}'
    assert imported(similarity) == "['numpy']"
    assert imported('{"auth": {"jwt": {"hs256_secret": "s" * 32}}}') == "['cryptography', 'jwt']"
