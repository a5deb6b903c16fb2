"""Raw HTTP/1.1 upstreams on loopback for the client's tests: each request read whole (head and Content-Length
body), then handed to the test's handler, which writes whatever bytes it likes and may close. The server counts
connections and requests, so that a test sees reuse and retries from the server's side."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Exchange:
    connection: int  # the server's count of the connection it came on, from 1
    index: int  # the request's place on its connection, from 0
    body: bytes
    head: bytes
    writer: asyncio.StreamWriter
    stopping: asyncio.Event

    async def hang(self) -> None:
        """Answer nothing until the upstream stops."""
        await self.stopping.wait()

    def answer(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[Exchange], Awaitable[None]]


@dataclass
class Upstream:
    handler: Handler
    connections: int = 0
    ended: int = 0  # connections the client (or the handler) closed
    requests: list[tuple[int, int, bytes]] = field(default_factory=list)  # (connection, index, head)
    port: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.add(writer)
        try:
            index = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((number, index, head))
                await self.handler(Exchange(number, index, body, head, writer, self.stopping))
                index += 1
                if writer.is_closing():
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended += 1
            writer.close()
            self.writers.discard(writer)


@contextlib.asynccontextmanager
async def upstream(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    up = Upstream(handler)
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0, ssl=tls)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
        up.stopping.set()
        for writer in list(up.writers):  # each handler's reads end, and its task with them
            writer.transport.abort()
        await until(lambda: not up.writers, "the upstream's connections to end")
        await server.wait_closed()


def answer(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, headers, len(body), body)


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait for a condition, with a deadline generous enough for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """A certificate for localhost (and 127.0.0.1), made now: the server's context, a client context that trusts
    it, and the list the server's SNI callback fills with the names clients asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    names: list[str] = []

    def note(sock: object, server_name: str | None, context: object) -> None:
        names.append(server_name or "")

    server.sni_callback = note
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client, names
