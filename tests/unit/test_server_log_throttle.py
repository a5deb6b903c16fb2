"""uvicorn's warnings about what clients send are throttled (gateway/server/log_throttle.py): garbage sent in a loop
gets its 400 every time but writes one log line per interval, which then says how many were left out."""

from __future__ import annotations

import asyncio
import logging
import random

from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.server.log_throttle import UVICORN_LOGGER, WarningThrottle
from gateway.server.protocol import BoundedHttpToolsProtocol, EdgeLimits

from .test_server_protocol import Transport, echo_length


def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(UVICORN_LOGGER, level, __file__, 1, msg, None, None)


def test_each_message_is_logged_once_per_interval_and_then_says_how_many_were_dropped():
    now = [0.0]
    throttle = WarningThrottle(interval_s=60.0, clock=lambda: now[0])
    rng = random.Random(7)
    passed: list[str] = []
    dropped = {"a": 0, "b": 0}
    for _ in range(500):
        now[0] += rng.uniform(0, 2)
        msg = rng.choice(["a", "b"])
        rec = record(msg)
        if throttle.filter(rec):
            passed.append(str(rec.msg))
        else:
            dropped[msg] += 1
    # Each message passes at most once per 60 s of the ~500 s: 2 messages x ceil(500 / 60) at most.
    assert 2 <= len(passed) <= 2 * 10
    assert passed[0] in ("a", "b")
    assert "more like it" not in passed[0]
    said = sum(int(p.split("(")[1].split(" ")[0]) for p in passed if "more like it" in p)
    pending = sum(throttle._last[m][1] for m in ("a", "b"))
    assert said + pending == sum(dropped.values())  # every dropped line is counted by a later one or still pending


def test_other_levels_are_never_dropped():
    throttle = WarningThrottle(interval_s=60.0, clock=lambda: 0.0)
    assert all(throttle.filter(record("boom", logging.ERROR)) for _ in range(10))
    assert all(throttle.filter(record("fyi", logging.INFO)) for _ in range(10))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_garbage_in_a_loop_gets_a_400_each_time_and_one_log_line():
    config = Config(echo_length, lifespan="off")  # configures uvicorn's logging: its loggers' handlers go

    async def main() -> list[bytes]:
        statuses = []
        for _ in range(50):
            protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, limits=EdgeLimits())
            transport = Transport()
            protocol.connection_made(transport)
            protocol.data_received(b"\x16\x03\x01 not http at all\r\n\r\n")
            await asyncio.sleep(0)
            statuses.append(bytes(transport.written).split(b"\r\n", 1)[0])
            protocol.connection_lost(None)
        return statuses

    # uvicorn's logging config keeps its loggers' records from the root's handlers (pytest's caplog): a handler of
    # its own on the logger, which sees what the logger's filters let through.
    logger = logging.getLogger(UVICORN_LOGGER)
    handler = Lines()
    logger.addHandler(handler)
    try:
        statuses = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    assert statuses == [b"HTTP/1.1 400 Bad Request"] * 50
    invalid = [line for line in handler.lines if "Invalid HTTP request" in line]
    assert len(invalid) <= 1
    assert len(handler.lines) == len(invalid)
