"""A dependency that fails the ways real ones do, for fault-injection tests: a TCP proxy on loopback in front of
PostgreSQL or Redis (or anything on TCP) that the test can cut (connections closed, new ones refused: the server
gone) or freeze (connections accepted and kept, not a byte forwarded either way: the server hung, as SIGSTOP
leaves it), and then restore. The proxy runs in a thread of its own, so a test's synchronous code drives it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.services import free_port


@contextlib.contextmanager
def redis_server(port: int, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server on `port`, keeping nothing on disk, that a test may stop (SIGSTOP: hung) or kill;
    resumed and ended when the block ends. Skips the test when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 5
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process does not act on SIGTERM
            proc.terminate()
            proc.wait(5)


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None  # clear while frozen
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @classmethod
    def before(cls, url: str) -> FaultyProxy:
        """A proxy in front of the server a URL names (postgresql://..., redis://...)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url(self, url: str) -> str:
        """The same URL, through the proxy."""
        parts = urlsplit(url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}"))

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thaw()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self.refusing:
            writer.transport.abort()
            return
        self._writers.add(writer)
        await self._flowing.wait()  # frozen: accepted, as the kernel accepts for a stopped server, and left there
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            assert self._flowing is not None
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _call(self, fn: Callable[[], None]) -> None:
        """fn on the proxy's loop, done when this returns."""

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def _events(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def cut(self) -> None:
        """The server goes away: every connection closed, new ones refused, until restore()."""

        def go() -> None:
            self.refusing = True
            self._close_all()

        self._call(go)

    def restore(self) -> None:
        self.refusing = False

    def freeze(self) -> None:
        """The server hangs: connections stay open (new ones too) and nothing goes through, until thaw()."""
        self._call(self._events().clear)

    def thaw(self) -> None:
        self._call(self._events().set)
