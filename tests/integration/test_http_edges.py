"""The edges of a connection, against a real `gateway serve` over real sockets: heads past the cap, heads and bodies
that stop arriving, connections past the limit, kept-alive connections, several workers. Timeouts are set small;
each test asserts "not before the deadline" (the sweep never acts early) and "within the deadline plus a
generous margin" (a loaded machine only makes it later)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import KEY
from tests.servers import gateway_process

MARGIN_S = 10.0
BODY = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}'


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def connect(port: int, timeout: float = 30.0) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def chat_request(extra_headers: bytes = b"", body: bytes = BODY) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: %d\r\n" % len(body) + extra_headers + b"\r\n"
    ) + body


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length, read off a connection that may stay open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    if "content-length" in headers:
        while len(rest) < int(headers["content-length"]):
            rest += sock.recv(65536)
        return int(lines[0].split()[1]), headers, rest
    assert headers["transfer-encoding"] == "chunked"
    while not rest.endswith(b"0\r\n\r\n"):  # the gateway's JSON never ends in this
        rest += sock.recv(65536)
    body, pieces = b"", rest
    while (size := int(pieces.split(b"\r\n", 1)[0], 16)) > 0:
        pieces = pieces.split(b"\r\n", 1)[1]
        body, pieces = body + pieces[:size], pieces[size + 2 :]
    return int(lines[0].split()[1]), headers, body


def send_all_until_refused(sock: socket.socket, data: bytes, total: int) -> None:
    """Send `total` bytes of `data` repeated, or as many as the server takes before it closes."""
    sent = 0
    with contextlib.suppress(ConnectionError, TimeoutError):
        while sent < total:
            sent += sock.send(data)


def assert_error(status: int, body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_a_head_past_the_cap_gets_431_finished_or_not_and_is_never_held(tmp_path):
    with gateway_process(tmp_path) as (url, proc):
        port = port_of(url)
        before = rss_mb(proc.pid)
        with connect(port) as sock:  # a finished head of 10 MB
            sock.sendall(chat_request(b"x-big: " + b"a" * (10 << 20) + b"\r\n"))
            status, headers, body = read_response(sock)
        assert_error(status, body, 431, "request_header_too_large")
        assert headers["connection"] == "close"
        with connect(port) as sock:  # a header that never ends: 200 MB of it, or as much as the gateway takes
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nx-endless: ")
            send_all_until_refused(sock, b"b" * 65536, 200 << 20)
            status, _, body = read_response(sock)
        assert_error(status, body, 431, "request_header_too_large")
        with connect(port) as sock:  # a head of exactly the cap is served
            short = len(chat_request(b"x-pad: \r\n")) - len(BODY)
            request = chat_request(b"x-pad: " + b"p" * (65536 - short) + b"\r\n")
            assert request.index(b"\r\n\r\n") + 4 == 65536
            sock.sendall(request)
            status, _, _ = read_response(sock)
        assert status == 200
        assert rss_mb(proc.pid) - before < 30


def test_many_connections_sending_endless_heads_hold_bounded_memory(tmp_path):
    with gateway_process(tmp_path) as (url, proc):
        port = port_of(url)
        before = rss_mb(proc.pid)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(200)]
        try:
            for sock in socks:  # 1 MB of an unfinished header each: 200 MB, were heads not capped
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nx-endless: ")
                send_all_until_refused(sock, b"c" * 65536, 1 << 20)
            grown = rss_mb(proc.pid) - before
            statuses = [read_response(sock)[0] for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    assert statuses == [431] * 200
    assert grown < 60, f"RSS grew {grown:.0f} MB"


def test_a_silent_connection_is_closed_and_a_trickling_head_gets_408_at_the_head_timeout(tmp_path):
    with gateway_process(tmp_path, server={"header_timeout_s": 1.0}) as (url, _):
        port = port_of(url)
        with connect(port) as sock:
            start = time.monotonic()
            assert read_until_closed(sock) == b""
            elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 1 + MARGIN_S
        with connect(port) as sock:  # slow loris: a byte every 50 ms, a head that would take 10 s
            start = time.monotonic()
            head = b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nx-slow: " + b"s" * 160 + b"\r\n\r\n"
            sock.settimeout(0.05)
            received = b""
            for byte in head:
                try:
                    sock.send(bytes([byte]))
                    received += sock.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionError:
                    break
                if received:
                    break
            sock.settimeout(30)
            received += read_until_closed(sock)
            elapsed = time.monotonic() - start
        assert received.startswith(b"HTTP/1.1 408 ")
        assert b'"request_timeout"' in received
        assert 0.9 <= elapsed < 1 + MARGIN_S


def test_a_kept_alive_connection_gets_the_head_timeout_anew_for_each_request(tmp_path):
    with gateway_process(tmp_path, server={"header_timeout_s": 1.0, "keep_alive_s": 30}) as (url, _):
        with connect(port_of(url)) as sock:
            for _ in range(3):  # each request comes 0.6 s after the previous answer: 1.8 s in all, > 1 s
                time.sleep(0.6)
                sock.sendall(chat_request())
                assert read_response(sock)[0] == 200
            sock.sendall(b"GET /v1/models HTTP/1.1\r\n")  # and a half-sent head is timed from its first byte
            start = time.monotonic()
            received = read_until_closed(sock)
            assert 0.9 <= time.monotonic() - start < 1 + MARGIN_S
        assert received.startswith(b"HTTP/1.1 408 ")


def test_a_body_that_stops_arriving_gets_408_at_the_body_timeout(tmp_path):
    with gateway_process(tmp_path, server={"body_timeout_s": 1.0}) as (url, _):
        with connect(port_of(url)) as sock:
            request = chat_request()
            sock.sendall(request[:-20])  # the head and most of the body
            start = time.monotonic()
            received = read_until_closed(sock)
            elapsed = time.monotonic() - start
        assert received.startswith(b"HTTP/1.1 408 ")
        assert b'"request_timeout"' in received
        assert 0.9 <= elapsed < 1 + MARGIN_S


def test_a_body_arriving_slowly_but_steadily_is_served(tmp_path):
    with gateway_process(tmp_path, server={"body_timeout_s": 1.0}) as (url, _), connect(port_of(url)) as sock:
        request = chat_request()
        head_end = request.index(b"\r\n\r\n") + 4
        sock.sendall(request[:head_end])
        for i in range(head_end, len(request), 20):  # 2 s in all, 0.5 s between chunks
            time.sleep(0.5)
            sock.sendall(request[i : i + 20])
        assert read_response(sock)[0] == 200


def test_connections_past_max_connections_get_503_until_one_closes(tmp_path):
    with gateway_process(tmp_path, server={"max_connections": 8}) as (url, _):
        port = port_of(url)
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        try:
            with connect(port) as sock:
                sock.sendall(chat_request())
                status, headers, body = read_response(sock)
            assert_error(status, body, 503, "too_many_connections")
            assert headers["retry-after"] == "1"
            held.pop().close()
            deadline = time.monotonic() + MARGIN_S
            while True:  # the refused connection lingers a moment, then a place is free
                with connect(port) as sock:
                    sock.sendall(chat_request())
                    status = read_response(sock)[0]
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert status == 200
        finally:
            for sock in held:
                sock.close()


def test_the_head_cap_holds_per_request_on_a_kept_alive_connection(tmp_path):
    with gateway_process(tmp_path) as (url, _):
        with connect(port_of(url)) as sock:
            for _ in range(5):  # 5 heads of 60 KB each on one connection: 300 KB in all, each under 64 KiB
                sock.sendall(chat_request(b"x-pad: " + b"p" * 60_000 + b"\r\n"))
                assert read_response(sock)[0] == 200
            sock.sendall(chat_request(b"x-pad: " + b"p" * 70_000 + b"\r\n"))
            status, _, body = read_response(sock)
        assert_error(status, body, 431, "request_header_too_large")


def test_the_edges_hold_in_every_worker(tmp_path):
    with gateway_process(tmp_path, "--workers", "2", server={"header_timeout_s": 1.0, "max_header_bytes": 4096}) as (
        url,
        _,
    ):
        port = port_of(url)
        for _ in range(6):  # new connections: both workers take some
            with connect(port) as sock:
                sock.sendall(chat_request(b"x-pad: " + b"p" * 5000 + b"\r\n"))
                assert read_response(sock)[0] == 431
            with connect(port) as sock:
                sock.sendall(chat_request())
                assert read_response(sock)[0] == 200
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(6)]
        try:
            start = time.monotonic()
            assert [read_until_closed(sock) for sock in socks] == [b""] * 6
            assert time.monotonic() - start < 1 + MARGIN_S
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.parametrize("value", [0, -1])
def test_the_edge_settings_must_be_positive(make_config, value):
    from gateway.config import ConfigError

    for key in ("max_connections", "max_header_bytes", "header_timeout_s", "body_timeout_s", "keep_alive_s"):
        with pytest.raises(ConfigError, match=f"server.{key}"):
            make_config(server={key: value})
