"""The server's own cost of a request, alone: N requests on one connection to gateway/server/protocol.py's
protocol (a transport that keeps what is written), each head parsed, its cycle made, its task run, and an app
that takes the body (body_received) and answers whole (send_whole). Run by
`SCRIPT=bench/micro_server.py bash bench/micro_route.sh MODE` under callgrind, MODE `lean` (the protocol as it
serves) or `uvicorn` (its on_headers_complete through uvicorn's own, then re-classed: the code before the lean
path)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.server.protocol import BoundedHttpToolsProtocol, EdgeLimits, body_received, send_whole

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: bench\r\n"
    b"authorization: Bearer sk-gw-xxxxxxxxxxxxxxxxxxxxxxxx\r\ncontent-type: application/json\r\n"
    b"accept: */*\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert body_received(receive) == BODY
    assert send_whole(send, 200, [(b"content-type", b"application/json")], b'{"ok":true}')


async def main(mode: str, n: int) -> None:
    config = Config(app, lifespan="off", log_level="warning", access_log=False, proxy_headers=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 03:00:00 GMT"), (b"server", b"uvicorn")]
    protocol = BoundedHttpToolsProtocol(config, state, {}, limits=EdgeLimits())
    protocol.lean = mode == "lean"
    transport = Transport()
    protocol.connection_made(transport)
    for _ in range(n):
        protocol.data_received(HEAD)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)  # its done callbacks
    assert transport.written.count(b"HTTP/1.1 200 OK\r\n") == n
    protocol.connection_lost(None)


if __name__ == "__main__":
    if sys.argv[1] not in ("lean", "uvicorn"):
        raise SystemExit(f"unknown mode {sys.argv[1]}")
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
