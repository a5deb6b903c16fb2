"""A real Redis Cluster on loopback for tests: three masters, each with one replica, started in a temp dir with
`redis-server --cluster-enabled yes` and joined by `redis-cli --cluster create`. Skipped with a reason where
redis-server is missing, unless GATEWAY_TEST_SERVICES=required, which fails instead (CI has it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services import free_port

MASTERS = 3
# Long enough that a loaded machine never fails a master over by itself; tests fail over on purpose (CLUSTER
# FAILOVER, which needs no timeout) or wait this long after a kill.
NODE_TIMEOUT_MS = 3000


def require_redis_server() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    message = "redis-server and redis-cli are needed to start a Redis Cluster (apt-get install redis-server)"
    if os.environ.get("GATEWAY_TEST_SERVICES") == "required":
        pytest.fail(f"{message} and GATEWAY_TEST_SERVICES=required")
    pytest.skip(message)


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    args: list[str]


@dataclass
class Cluster:
    cli: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The gateway's URL for it: every node a seed (any one would do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def redis(self, port: int, *args: str) -> str:
        out = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip()

    def role(self, port: int) -> str:
        return self.redis(port, "ROLE").split("\n", 1)[0]

    def masters(self) -> list[int]:
        return [n.port for n in self.nodes if n.process.poll() is None and self.role(n.port) == "master"]

    def replica_of(self, master: int) -> int:
        for node in self.nodes:
            if node.process.poll() is None and self.role(node.port) == "slave":
                info = self.redis(node.port, "INFO", "replication")
                if f"master_port:{master}" in info:
                    return node.port
        raise AssertionError(f"no replica of {master}")

    def wait_healthy(self, timeout_s: float = 60) -> None:
        """Every live node sees the cluster ok, every slot served by a live master, and every replica in sync."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = [n.port for n in self.nodes if n.process.poll() is None]
            ok = all("cluster_state:ok" in self.redis(p, "CLUSTER", "INFO") for p in live)
            if ok:
                replicas = [p for p in live if self.role(p) == "slave"]
                ok = all("master_link_status:up" in self.redis(p, "INFO", "replication") for p in replicas)
                ok = ok and len(self.masters()) == MASTERS and self._views_agree(live)
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster not healthy:\n" + self.redis(live[0], "CLUSTER", "NODES"))
            time.sleep(0.1)

    def _views_agree(self, live: list[int]) -> bool:
        """Every live node has the same masters serving slots (no node still believes in a failed-over one)."""
        views = set()
        for port in live:
            lines = self.redis(port, "CLUSTER", "NODES").splitlines()
            views.add(frozenset(ln.split()[1].split("@")[0] for ln in lines if "master" in ln and "fail" not in ln))
        return len(views) == 1

    def fail_over(self, master: int) -> int:
        """A manual failover: the replica of `master` catches up, then takes its slots over. Its port."""
        replica = self.replica_of(master)
        assert self.redis(replica, "CLUSTER", "FAILOVER") == "OK"
        deadline = time.monotonic() + 60
        while self.role(replica) != "master" or self.role(master) != "slave":
            if time.monotonic() > deadline:
                raise RuntimeError(f"failover of {master} to {replica} did not happen")
            time.sleep(0.05)
        self.wait_healthy()
        return replica

    def kill(self, port: int) -> None:
        """kill -9: no goodbye to the cluster, which notices after NODE_TIMEOUT_MS and promotes the replica."""
        node = next(n for n in self.nodes if n.port == port)
        node.process.kill()
        node.process.wait(timeout=10)

    def restart(self, port: int) -> None:
        """A killed node started again on its port with its nodes.conf: it rejoins, as a replica of its successor."""
        node = next(n for n in self.nodes if n.port == port)
        node.process = subprocess.Popen(node.args, stdout=subprocess.DEVNULL)
        self.wait_healthy()
        deadline = time.monotonic() + 60
        while self.role(port) != "slave" or "master_link_status:up" not in self.redis(port, "INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {port} did not rejoin as a replica")
            time.sleep(0.1)

    def flush(self) -> None:
        for port in self.masters():
            self.redis(port, "FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)


@contextlib.contextmanager
def redis_cluster(workdir: Path, replicas: int = 1) -> Iterator[Cluster]:
    server, cli = require_redis_server()
    cluster = Cluster(cli)
    try:
        for i in range(MASTERS * (1 + replicas)):
            port, bus = free_port(), free_port()
            home = workdir / f"node{i}"
            home.mkdir(parents=True)
            args = [server, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(home), "--save", "",
                    "--appendonly", "no", "--logfile", str(home / "redis.log")]  # fmt: skip
            cluster.nodes.append(Node(port, subprocess.Popen(args, stdout=subprocess.DEVNULL), args))
        for node in cluster.nodes:
            deadline = time.monotonic() + 30
            while cluster.redis(node.port, "PING") != "PONG":
                if node.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {node.port} did not start")
                time.sleep(0.05)
        addresses = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
