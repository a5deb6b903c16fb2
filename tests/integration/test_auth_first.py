"""The key is checked from the headers before the body is read: a caller without a valid key costs the parse of its
headers. Each test sends the headers of a 15 MB request and never its body, so a gateway that read the body
first would never answer; and the connection never desyncs (it is closed, or the small unread body discarded).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from tests.conftest import KEY, ROOT, base_config, merge, running
from tests.integration.helpers import wait_until
from tests.integration.test_client_gone import connect, records, request_bytes

BIG = 15 * 1024 * 1024
SECRET = "s" * 40
ADMIN = "sk-admin-bootstrap"
CHAT = orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})

# Every endpoint that needs a key and takes a body, with the shape of its errors.
ENDPOINTS = [
    ("POST", "/v1/chat/completions", "openai"),
    ("POST", "/v1/completions", "openai"),
    ("POST", "/v1/embeddings", "openai"),
    ("POST", "/v1/messages", "anthropic"),
    ("POST", "/v1/responses", "openai"),
    ("POST", "/admin/keys", "openai"),
    ("POST", "/api/v1/policies", "openai"),
    ("PUT", "/api/v1/features/similarity", "openai"),
]
BAD_KEYS = {
    "no key": {},
    "unknown key": {"authorization": "Bearer sk-not-a-key"},
    "unknown virtual key": {"authorization": "Bearer sk-gw-0123456789abcdef0123456789abcdef"},
    "forged jwt": {"authorization": "Bearer " + jwt.encode({"sub": "eve", "exp": 2**31}, "x" * 40, algorithm="HS256")},
    "anthropic x-api-key": {"x-api-key": "sk-not-a-key"},
}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Config keys, the admin key, virtual keys (the SQLite store) and HS256 JWTs, all at once."""
    data = merge(base_config(tmp_path_factory.mktemp("auth-first")),
                 {"auth": {"admin_key": ADMIN, "jwt": {"hs256_secret": SECRET}}})  # fmt: skip
    config = parse_config(yaml.safe_dump(data), source="test.yaml", env=os.environ, base_dir=str(ROOT))
    with running(config) as (url, _):
        yield url


class Reader:
    """HTTP/1.1 responses read off a socket, one at a time (Content-Length or chunked bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.data:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed in the middle of a response: {self.data!r}"
            self.data += chunk
        line, _, self.data = self.data.partition(marker)
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.data) < size:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed in the middle of a body"
            self.data += chunk
        out, self.data = self.data[:size], self.data[size:]
        return out

    def response(self) -> tuple[int, dict[str, str], bytes]:
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._until(b"\r\n"), 16):
                body += self._exactly(size)
                self._exactly(2)
            self._exactly(2)
            return status, headers, body
        return status, headers, self._exactly(int(headers.get("content-length", "0")))


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    return Reader(sock).response()


def headers_only(url: str, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    sock = connect(url)
    sock.settimeout(5)  # a gateway that waited for the body would time out here
    lines = [f"{method} {path} HTTP/1.1", "host: gateway", "content-type: application/json", f"content-length: {BIG}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def assert_closed(sock: socket.socket) -> None:
    """The server closes the connection: nothing more comes, then EOF (or a reset, the unread body being lost)."""
    rest = b""
    try:
        while chunk := sock.recv(65536):
            rest += chunk
    except ConnectionResetError:
        pass
    assert rest == b""


CASES = [
    pytest.param(method, path, shape, bad, id=f"{path} {bad}")
    for method, path, shape in ENDPOINTS
    for bad in BAD_KEYS
    if shape == "anthropic" or bad != "anthropic x-api-key"
]


@pytest.mark.parametrize(("method", "path", "shape"), [e for e in ENDPOINTS if e[1].startswith("/v1/")])
def test_a_role_the_route_is_closed_to_is_refused_before_the_body_is_read(gateway_url, method, path, shape) -> None:
    viewer = jwt.encode({"sub": "auditor", "exp": 2**31, "role": "viewer"}, SECRET, algorithm="HS256")
    sock = headers_only(gateway_url, method, path, {"authorization": f"Bearer {viewer}"})
    status, headers, body = read_response(sock)
    assert status == 403, body
    assert headers["connection"] == "close"
    error = orjson.loads(body)["error"]
    assert (error["type"] if shape == "anthropic" else error["code"]) in ("permission_error", "role_not_allowed")
    assert_closed(sock)
    sock.close()


@pytest.mark.parametrize(("method", "path", "shape", "bad"), CASES)
def test_a_bad_key_is_refused_before_the_body_is_read(gateway_url, method, path, shape, bad) -> None:
    sock = headers_only(gateway_url, method, path, BAD_KEYS[bad])
    status, headers, body = read_response(sock)
    assert status == 401, body
    assert headers["connection"] == "close"  # 15 MB unread: not worth reading to keep the connection
    error = orjson.loads(body)
    if shape == "anthropic":
        assert error["type"] == "error"
        assert error["error"]["type"] == "authentication_error"
    else:
        assert error["error"]["type"] == "authentication_error"
        assert set(error["error"]) == {"message", "type", "param", "code"}
    assert_closed(sock)
    sock.close()


def test_the_refused_request_is_recorded_as_401(make_config: Callable[..., GatewayConfig], db_path: Path) -> None:
    with running(make_config()) as (url, _):
        sock = headers_only(url, "POST", "/v1/chat/completions", {"authorization": "Bearer sk-wrong"})
        assert read_response(sock)[0] == 401
        sock.close()
        assert wait_until(lambda: len(records(db_path)) == 1, timeout=10)
    (record,) = records(db_path)
    assert record["status"] == 401
    assert record["error_type"] == "invalid_api_key"
    assert record["model_requested"] == ""  # the body was never read


@pytest.mark.parametrize(
    "overrides",
    [{"auth": {"mode": "none"}}, {"pipeline": ["route"]}],
    ids=["auth mode none", "no auth filter"],
)
def test_without_authentication_the_body_is_read_and_served(
    make_config: Callable[..., GatewayConfig], overrides: dict[str, Any]
) -> None:
    with running(make_config(**overrides)) as (url, _):
        sock = connect(url)
        sock.sendall(request_bytes("/v1/chat/completions", CHAT))
        status, _, body = read_response(sock)
        assert status == 200, body
        sock.close()


def test_a_small_unread_body_is_discarded_and_the_connection_kept(gateway_url) -> None:
    """Two requests sent back to back on one connection: the first (bad key, its 2 KB body unread) is refused; the
    second is read where it begins, not inside the first one's body."""
    sock = connect(gateway_url)
    padded = orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": "x" * 2048}]})
    sock.sendall(
        request_bytes("/v1/chat/completions", padded, {"authorization": "Bearer sk-wrong"})
        + request_bytes("/v1/chat/completions", CHAT, {"authorization": f"Bearer {KEY}"})
    )
    reader = Reader(sock)
    first = reader.response()
    assert first[0] == 401
    assert "connection" not in first[1]
    second = reader.response()
    assert second[0] == 200, second[2]
    assert orjson.loads(second[2])["object"] == "chat.completion"
    sock.close()


def test_a_small_body_sent_after_its_401_is_dropped_and_the_connection_serves_the_next_request(gateway_url) -> None:
    """A client that writes its head, then its body once the answer is in (as httpx may): the body arriving after
    the 401 is dropped, and the connection, kept alive as the 401 said, serves the next request."""
    sock = connect(gateway_url)
    padded = orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": "x" * 2048}]})
    sock.sendall(request_bytes("/v1/chat/completions", b"", {"authorization": "Bearer sk-wrong"}, length=len(padded)))
    reader = Reader(sock)
    first = reader.response()
    assert first[0] == 401
    assert "connection" not in first[1]
    for piece in (padded[:1000], padded[1000:]):  # the rest comes late, in pieces
        sock.sendall(piece)
    sock.sendall(request_bytes("/v1/chat/completions", CHAT, {"authorization": f"Bearer {KEY}"}))
    second = reader.response()
    assert second[0] == 200, second[2]
    assert orjson.loads(second[2])["object"] == "chat.completion"
    sock.close()


def test_a_large_unread_body_closes_the_connection_before_a_next_request(gateway_url) -> None:
    """A 1 MB body with a bad key, then a second request on the same connection: the 401 closes the connection, so
    the second request is never taken from the middle of the first one's body."""
    sock = connect(gateway_url)
    body = b'{"model": "demo", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    sock.sendall(request_bytes("/v1/chat/completions", b"", {"authorization": "Bearer sk-wrong"}, length=len(body)))
    status, headers, _ = read_response(sock)
    assert status == 401
    assert headers["connection"] == "close"
    # The rest of the body and the next request, as a client that writes before it reads would send them.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(body + request_bytes("/v1/chat/completions", CHAT, {"authorization": f"Bearer {KEY}"}))
    assert_closed(sock)
    sock.close()


def test_expect_100_continue_with_a_bad_key_gets_no_continue_and_a_closed_connection(gateway_url) -> None:
    """The client waits for 100 Continue before it sends the body: it gets the 401 instead, and the connection is
    closed, since the body the server would otherwise wait for never comes."""
    sock = connect(gateway_url)
    sock.settimeout(5)
    sock.sendall(request_bytes("/v1/chat/completions", b"", {"expect": "100-continue"}, length=len(CHAT)))
    status, headers, _ = read_response(sock)
    assert status == 401
    assert headers["connection"] == "close"
    assert_closed(sock)
    sock.close()


def test_a_valid_key_still_sends_100_continue_and_is_served(gateway_url) -> None:
    sock = connect(gateway_url)
    sock.settimeout(5)
    headers = {"expect": "100-continue", "authorization": f"Bearer {KEY}"}
    sock.sendall(request_bytes("/v1/chat/completions", b"", headers, length=len(CHAT)))
    assert sock.recv(1024).startswith(b"HTTP/1.1 100")  # only once the key is known good
    sock.sendall(CHAT)
    status, _, body = read_response(sock)
    assert status == 200, body
    sock.close()


def test_a_jwt_signed_with_the_secret_passes_the_door(gateway_url) -> None:
    token = jwt.encode({"sub": "ada", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    sock = connect(gateway_url)
    sock.sendall(request_bytes("/v1/chat/completions", CHAT, {"authorization": f"Bearer {token}"}))
    status, _, body = read_response(sock)
    assert status == 200, body
    sock.close()
