"""The shipped deployment, checked without a Docker engine: the image's files are assembled from the Dockerfile and
.dockerignore and its own command is run on them; docker-compose.yml is read as compose reads it and the gateway's
config inside it is checked with the environment compose gives it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.config import GatewayConfig, load_config
from tests import compose
from tests.conftest import ROOT
from tests.dockerfile import Dockerfile, DockerIgnore, Stage, assemble, glob_regex
from tests.services import free_port

DOCKERFILE = Dockerfile((ROOT / "Dockerfile").read_text())
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
BIN = Path(sys.executable).parent
# What an operator must export before `docker compose up` (the file says so with ${VAR:?...}).
COMPOSE_ENV = {"GATEWAY_KEY": "sk-compose-client", "GATEWAY_ADMIN_KEY": "sk-compose-admin"}


# -- .dockerignore, as BuildKit reads it ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [
        ("*", "gateway.yaml", True),
        ("*", "gateway/app.py", True),  # the parent directory matches
        ("*\n!gateway/", "gateway/app.py", False),
        ("*\n!gateway/", "gateway", False),
        ("*\n!gateway/", "gateways/x", True),
        ("*\n!gateway/\n**/__pycache__", "gateway/__pycache__/app.cpython-311.pyc", True),
        ("*\n!gateway/\n**/*.py[co]", "gateway/app.pyc", True),
        ("*\n!gateway/\n**/*.py[co]", "gateway/app.py", False),
        ("**/*.db", "gateway.db", True),  # `**/` matches no directory too
        ("**/*.db", "a/b/c/x.db", True),
        ("/gateway.yaml", "gateway.yaml", True),  # a leading slash is the context's root
        ("gateway/*.py", "gateway/app.py", True),
        ("gateway/*.py", "gateway/api/http.py", False),  # * stops at /
        ("gateway/**/*.py", "gateway/api/http.py", True),
        ("gateway/**", "gateway/api/http.py", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("*.md\n!README.md", "README.md", False),
        ("*.md\n!README.md", "CHANGES.md", True),
        ("!README.md\n*.md", "README.md", True),  # the last matching line wins
        ("# comment\n\n  docs  ", "docs/x", True),
        ("./spool/../spool", "spool/a", True),  # patterns are cleaned paths
        ("file.(x)", "file.(x)", True),  # regexp characters are literal
        ("file.(x)", "fileA(x)", False),
    ],
)
def test_dockerignore_follows_buildkit(rules: str, path: str, excluded: bool) -> None:
    assert DockerIgnore(rules).excluded(path) is excluded


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for path in (".git/config", ".venv/bin/python", ".env", "deploy/.env.prod", "gateway.db", "gateway/x.db-wal",
                 "spool/store/0001.spool", "tests/conftest.py", "gateway/__pycache__/app.cpython-311.pyc"):  # fmt: skip
        assert ignore.excluded(path), path
    for path in ("gateway/app.py", "gateway/state/limits.lua", "gateway.yaml", "config/pricing.yaml"):
        assert not ignore.excluded(path), path


# -- the image ---------------------------------------------------------------------------------------------------


def runtime_env(stage: Stage, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The image's ENV, with this venv's PATH (the image's /opt/venv is this test's interpreter) and nothing of
    the test's own environment: a variable the config reads must come from the image or the operator."""
    env = {k: v for k, v in stage.env.items() if k != "PATH"}
    return {**env, "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), **extra}


def in_image(root: Path, args: list[str], workdir: str) -> list[str]:
    """A command line of the image with its paths inside the image moved under the assembled root."""
    out = []
    for arg in args:
        if arg.startswith("/") and PurePosixPath(arg).is_relative_to(workdir):
            arg = str(root / arg.lstrip("/"))
        out.append(arg)
    return out


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    assemble(DOCKERFILE, ROOT, root)
    return root


def config_of(command: list[str]) -> str:
    return command[command.index("--config") + 1]


def test_the_images_command_checks_on_the_images_own_files(image: Path, tmp_path: Path) -> None:
    stage = DOCKERFILE.final
    command = in_image(image, stage.cmd, stage.workdir)
    assert command[:2] == ["gateway", "serve"]
    workdir = image / stage.workdir.lstrip("/")
    env = runtime_env(stage, tmp_path)
    config = config_of(command)
    checked = subprocess.run(
        [str(BIN / "gateway"), "check", "--config", config], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    loaded = load_config(config, env=env)
    for path in referenced_files(loaded, image):
        assert path.exists(), f"{path} is named by the image's config but not in the image"
    for policies in loaded.policies.paths:
        folder = str(loaded.resolve_path(policies))
        for action in ("check", "test"):
            result = subprocess.run(
                [str(BIN / "gateway"), "policy", action, folder], cwd=workdir, env=env, capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr


def referenced_files(config: GatewayConfig, root: Path) -> list[Path]:
    """Files and folders a config needs at start, resolved as the gateway resolves them, under the assembled root.
    (`gateway check` passes when the pricing file is missing: costs are then unknown, with a warning at start.)"""
    paths = [config.telemetry.pricing_file, config.guardrails.abuse_prompts_file, *config.policies.paths]
    return [host_path(root, config.resolve_path(p)) for p in paths]


def host_path(root: Path, path: Path) -> Path:
    """A path the gateway resolved inside the container, on this machine."""
    return path if path.is_relative_to(root) else root / str(path).lstrip("/")


def container_path(root: Path, path: Path) -> PurePosixPath:
    return PurePosixPath("/", str(path.relative_to(root))) if path.is_relative_to(root) else PurePosixPath(path)


@contextlib.contextmanager
def started(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_live(url: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the gateway did not start:\n{log.read_text()}")
        time.sleep(0.05)


def test_the_images_command_starts_passes_its_healthcheck_and_stops_cleanly(image: Path, tmp_path: Path) -> None:
    stage = DOCKERFILE.final
    port = free_port()
    env = runtime_env(stage, tmp_path, GATEWAY_PORT=str(port))
    # The image's command as it is; only the listen address is narrowed to loopback for the test.
    command = [*in_image(image, stage.cmd, stage.workdir), "--host", "127.0.0.1"]
    command[0] = str(BIN / command[0])
    log = tmp_path / "image.log"
    with started(command, image / stage.workdir.lstrip("/"), env, log) as proc:
        wait_live(f"http://127.0.0.1:{port}", proc, log)
        healthcheck = [sys.executable if a == "python" else a for a in stage.healthcheck]
        assert subprocess.run(healthcheck, env=env, timeout=60).returncode == 0
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()


def test_the_wheel_carries_every_file_the_package_reads() -> None:
    """The image installs the gateway as a wheel: a data file that package-data does not name is not in it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway"]
    tracked = subprocess.run(["git", "ls-files", "gateway"], cwd=ROOT, capture_output=True, text=True, check=True)
    data_files = [PurePosixPath(p).relative_to("gateway") for p in tracked.stdout.split() if not p.endswith(".py")]
    assert data_files
    for path in data_files:
        assert any(glob_regex(pattern).match(str(path)) for pattern in patterns), f"gateway/{path} is not package data"


def test_a_copy_of_something_left_out_of_the_context_fails_like_docker(tmp_path: Path) -> None:
    context = tmp_path / "context"
    (context / "kept").mkdir(parents=True)
    (context / "kept" / "a.txt").write_text("a")
    (context / "secret.env").write_text("x")
    (context / ".dockerignore").write_text("*\n!kept/\n")
    dockerfile = Dockerfile("FROM scratch\nWORKDIR /app\nCOPY kept ./kept\nCOPY secret.env ./\n")
    with pytest.raises(FileNotFoundError, match=r"secret\.env"):
        assemble(dockerfile, context, tmp_path / "root")
    assemble(Dockerfile("FROM scratch\nWORKDIR /app\nCOPY kept ./kept\n"), context, tmp_path / "ok")
    assert (tmp_path / "ok" / "app" / "kept" / "a.txt").read_text() == "a"


# -- docker-compose.yml ------------------------------------------------------------------------------------------


def compose_file(env: dict[str, str] | None = None) -> dict[str, Any]:
    return compose.load(COMPOSE, COMPOSE_ENV if env is None else env)


def test_compose_refuses_to_start_without_the_keys_it_needs() -> None:
    for missing in COMPOSE_ENV:
        env = {k: v for k, v in COMPOSE_ENV.items() if k != missing}
        with pytest.raises(compose.MissingVariable, match=missing):
            compose_file(env)


@pytest.fixture
def compose_gateway(tmp_path: Path) -> tuple[Path, list[str], dict[str, str], dict[str, Any]]:
    """The gateway container of docker-compose.yml: the image's files, the service's mounts, its command, its
    environment. Returns (root, command, env, the whole compose file)."""
    data = compose_file()
    service = data["services"]["gateway"]
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    dockerfile = Dockerfile((context / build.get("dockerfile", "Dockerfile")).read_text())
    root = tmp_path / "container"
    assemble(dockerfile, context, root)
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):  # a bind mount: the file must ship beside the compose file
            host = (COMPOSE.parent / source).resolve()
            assert host.exists(), f"{source} is mounted but does not exist"
            (root / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / target.lstrip("/")).write_bytes(host.read_bytes())
        else:
            assert source in data.get("volumes", {}), f"volume {source} is not declared"
            (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
    stage = dockerfile.final
    command = in_image(root, service.get("command") or stage.cmd, "/")
    env = {**runtime_env(stage, tmp_path), **compose.environment(service)}
    return root, command, env, data


def test_compose_gateway_config_checks_in_its_container(compose_gateway: Any) -> None:
    root, command, env, _ = compose_gateway
    stage = DOCKERFILE.final
    checked = subprocess.run(
        [str(BIN / "gateway"), "check", "--config", config_of(command)],
        cwd=root / stage.workdir.lstrip("/"), env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    config = load_config(config_of(command), env=env)
    for path in referenced_files(config, root):
        assert path.exists(), f"{path} is named by the compose config but not in the container"


def test_compose_gateway_uses_the_services_compose_starts(compose_gateway: Any) -> None:
    root, command, env, data = compose_gateway
    services = data["services"]
    config = load_config(config_of(command), env=env)
    # PostgreSQL runs: the store is in it, with the credentials the postgres service was given.
    store = urlsplit(config.telemetry.store)
    assert store.scheme in ("postgres", "postgresql"), config.telemetry.store
    postgres = services[store.hostname]
    assert postgres["image"].startswith("postgres")
    pg_env = compose.environment(postgres)
    assert (store.username, store.password, store.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"],
    )  # fmt: skip
    # Redis runs: shared state and limits are in it.
    for backend in (config.state.backend, config.limits.backend):
        url = urlsplit(backend)
        assert url.scheme == "redis", backend
        assert services[url.hostname]["image"].startswith("redis")
    depends = services["gateway"]["depends_on"]
    assert {depends[name]["condition"] for name in (store.hostname, "redis")} == {"service_healthy"}
    # The admin API works as shipped: an admin key from the environment, distinct from the client's key.
    assert config.auth.admin_key == COMPOSE_ENV["GATEWAY_ADMIN_KEY"]
    assert {k.key for k in config.auth.keys} == {COMPOSE_ENV["GATEWAY_KEY"]}
    # What waits for the store while it is down survives a restart of the container: the spool is on a volume.
    spool = container_path(root, config.resolve_path(config.telemetry.spool_dir))
    mounts = [PurePosixPath(v.split(":")[1]) for v in services["gateway"]["volumes"] if not v.startswith((".", "/"))]
    assert any(spool.is_relative_to(m) for m in mounts), f"spool_dir {spool} is not on a volume"
