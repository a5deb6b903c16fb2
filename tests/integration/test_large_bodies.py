"""Large bodies that end in an error give their memory back: nothing keeps them alive after the answer (an error's
traceback held the body in a cycle), and the allocator returns them to the system (gateway/memory.py)."""

from __future__ import annotations

import concurrent.futures
import gc
import socket
import tracemalloc

import httpx
import pytest

from gateway.errors import InvalidRequest, release_frames
from tests.conftest import KEY, running
from tests.integration.test_http_edges import read_response, rss_mb
from tests.servers import gateway_process

MB = 1 << 20


def bodies(size: int) -> dict[str, tuple[bytes, str, int]]:
    """name -> (body, key, the status it ends in)"""
    pad = b"x" * size
    return {
        "broken JSON": (b'{"model": "demo", "messages": [{"role": "user", "content": "' + pad + b'"', KEY, 400),
        "bad field": (
            b'{"model": "demo", "max_tokens": "lots", "messages": [{"role": "user", "content": "' + pad + b'"}]}',
            KEY,
            400,
        ),
        "unknown model": (b'{"model": "nope", "messages": [{"role": "user", "content": "' + pad + b'"}]}', KEY, 404),
        "many small objects": (
            b'{"model": "nope", "messages": ['
            + b",".join([b'{"role": "user", "content": "abcdefghij"}'] * (size // 42))
            + b"]}",
            KEY,
            404,
        ),
        "wrong key": (b'{"model": "demo", "messages": [{"role": "user", "content": "' + pad + b'"}]}', "sk-no", 401),
    }


def test_release_frames_drops_the_tracebacks_of_an_error_and_its_chain():
    def parse() -> None:
        try:
            raise ValueError("inner")
        except ValueError as exc:
            raise InvalidRequest("outer") from exc

    with pytest.raises(InvalidRequest) as caught:
        parse()
    error = caught.value
    assert error.__traceback__ is not None
    assert error.__cause__.__traceback__ is not None
    release_frames(error)
    assert error.__traceback__ is None
    assert error.__cause__.__traceback__ is None


@pytest.mark.parametrize("name", list(bodies(1)))
def test_a_refused_body_is_freed_at_once_without_the_garbage_collector(make_config, name):
    body, key, status = bodies(4 * MB)[name]
    with running(make_config(server={"max_body_mb": 16})) as (url, _), httpx.Client() as client:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        assert client.post(f"{url}/v1/chat/completions", content=body, headers=headers).status_code == status
        gc.collect()
        gc.disable()  # what reference counting does not free stays: a cycle holding a body would show
        tracemalloc.start()
        try:
            for _ in range(8):
                assert client.post(f"{url}/v1/chat/completions", content=body, headers=headers).status_code == status
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
    assert held < 4 * MB, f"{held / MB:.1f} MB still held after 8 bodies of 4 MB"


def send_raw(port: int, case: tuple[bytes, str, int]) -> int:
    body, key, _ = case
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n" % (key.encode(), len(body)) + body
        )
        return read_response(sock)[0]


def send_forty(port: int, cases: list[tuple[bytes, str, int]]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 8 at a time
        work = [cases[i % len(cases)] for i in range(40)]
        statuses = list(pool.map(lambda case: send_raw(port, case), work))
    assert statuses == [case[2] for case in work]


def test_forty_bodies_of_15_mb_ending_in_errors_grow_rss_by_less_than_100_mb(tmp_path):
    cases = [case for name, case in bodies(15 * MB).items() if name != "many small objects"]
    with gateway_process(tmp_path, server={"max_body_mb": 16}) as (url, proc):
        httpx.get(f"{url}/health/live")
        before = rss_mb(proc.pid)
        send_forty(int(url.rsplit(":", 1)[1]), cases)
        grown = rss_mb(proc.pid) - before
    assert grown < 100, f"RSS grew {grown:.0f} MB"


def test_bodies_of_many_small_objects_leave_a_high_water_mark_not_a_growth(tmp_path):
    """15 MB of small JSON objects parse into ~100 MB of Python objects. The process keeps about that much once
    (CPython's allocator keeps the arenas; measured +115 MB after the first such body, the same after 40), but it
    must not grow with each one: a second round of forty adds (almost) nothing to the first."""
    case = bodies(15 * MB)["many small objects"]
    with gateway_process(tmp_path, server={"max_body_mb": 16}) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        httpx.get(f"{url}/health/live")
        before = rss_mb(proc.pid)
        send_forty(port, [case])
        first = rss_mb(proc.pid)
        send_forty(port, [case])
        second = rss_mb(proc.pid)
    assert first - before < 250, f"RSS grew {first - before:.0f} MB on the first forty"
    assert second - first < 30, f"RSS grew {second - first:.0f} MB more on the second forty"
