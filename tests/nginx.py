"""Debian's nginx as a round-robin load balancer in front of gateway replicas, for tests on loopback.

nginx runs in the foreground (`daemon off`) from a config written into the test's folder, with its pid, logs
and temporary files there too: nothing of the system's nginx is read or written. Each answer carries
`x-upstream-addr` (nginx's `$upstream_addr`: the replica, or the replicas tried, that answered), so a test
knows which replica served what.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

NGINX = os.environ.get("GATEWAY_TEST_NGINX", "/usr/sbin/nginx")


def require_nginx() -> str:
    """The nginx binary; the test skips without one, or fails under GATEWAY_TEST_SERVICES=required (CI, where
    `make test` installs it)."""
    binary = NGINX if os.access(NGINX, os.X_OK) else shutil.which("nginx")
    if binary:
        return binary
    message = f"nginx is not installed ({NGINX}; apt-get install nginx)"
    if os.environ.get("GATEWAY_TEST_SERVICES") == "required":
        pytest.fail(f"{message} and GATEWAY_TEST_SERVICES=required")
    pytest.skip(message)


def round_robin_conf(folder: Path, port: int, backends: list[int]) -> str:
    servers = "\n".join(
        # A replica that refuses a connection is skipped for a second, then tried again: a restarted one is back in
        # the rotation at once, and a killed one costs each request one refused connect at most once a second.
        f"        server 127.0.0.1:{backend} max_fails=1 fail_timeout=1s;"
        for backend in backends
    )
    temp = folder / "temp"
    # As root (CI), nginx's workers would run as `nobody`, which cannot open files in the test's folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""# Written by tests/nginx.py for one test; not the system's nginx.
{user}daemon off;
master_process on;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    log_format replicas '$remote_addr "$request" $status $upstream_addr $upstream_status $request_time';
    access_log {folder}/access.log replicas;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    upstream gateways {{
{servers}
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 60s;
            # The default: a request is passed to the next replica only when it could not be sent to this one
            # (refused, reset before sending). A POST that a replica took and then lost to a kill -9 is a 502.
            proxy_next_upstream error timeout;
            add_header x-upstream-addr $upstream_addr always;
        }}
    }}
}}
"""


@contextlib.contextmanager
def round_robin(folder: Path, backends: list[int]) -> Iterator[str]:
    """nginx on a free port balancing over 127.0.0.1:<backends> in turn; yields its base URL, stops it after."""
    binary = require_nginx()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "temp").mkdir(exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(round_robin_conf(folder, port, backends))
    out = (folder / "nginx.out").open("wb")
    # -e: the error log from the very start (before the config is read, nginx would open the system's).
    command = [binary, "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")]
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/health/live", timeout=1)  # any answer (a 502 too) means it listens
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(folder / 'error.log').read_text(errors='replace')}")
            time.sleep(0.05)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # fast shutdown: master and worker go
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        out.close()


def served_by(response: httpx.Response) -> str:
    """The replica (host:port) that gave this answer: the last one nginx tried."""
    return response.headers.get("x-upstream-addr", "").split(",")[-1].strip()
