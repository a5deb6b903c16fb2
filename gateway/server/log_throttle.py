"""uvicorn's warnings about what a client sent, throttled.

uvicorn logs a warning for every request that is not HTTP ("Invalid HTTP request received."), every unsupported
upgrade, and so on: a client that sends garbage in a loop writes a log line per request, as fast as it can send
them, and can flood the operator's logs. Each such message is logged the first time, then at most once per
`interval_s`, saying how many like it were left out since. The client still gets its 400 every time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

UVICORN_LOGGER = "uvicorn.error"


class WarningThrottle(logging.Filter):
    """A logging filter: a WARNING whose message was logged less than `interval_s` ago is dropped and counted;
    the next one let through says how many were."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # message -> (when last logged, how many dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = str(record.msg)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if len(self._last) >= 256:  # messages are uvicorn's few constants; bounded all the same
            self._last.clear()
        self._last[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} ({last[1]} more like it in the last {now - last[0]:.0f} s, not logged)"
        return True


def throttle_uvicorn_warnings(interval_s: float = 60.0) -> None:
    """Install the throttle on uvicorn's logger, once per process (its logging config keeps a logger's filters)."""
    logger = logging.getLogger(UVICORN_LOGGER)
    if not any(isinstance(f, WarningThrottle) for f in logger.filters):
        logger.addFilter(WarningThrottle(interval_s))
