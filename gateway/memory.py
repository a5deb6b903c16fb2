"""The C allocator's settings: large requests give their memory back to the system, and so does a big load. And
bytes kept for long in allocations of their own size (right_sized).

glibc serves an allocation below its mmap threshold from its heaps, and gives a heap's free memory back only
from the top. The threshold starts at 128 KiB but rises to the size of any mapped block that is freed (up to
32 MiB): after the first large body, the next ones (the bodies, their parsed strings, the buffers they are read
into) were cut from the heap among small live objects, and once freed stayed in the process (measured: +151 MB
of RSS after 40 bodies of 15 MB answered 404 with some small traffic beside them; +5 MB with the threshold
fixed). Fixing the threshold keeps every block of 1 MiB or more in a mapping of its own, unmapped when freed.
Nothing on the hot path allocates that much, so it costs nothing there; a large body pays a few mmap calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import platform

MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # malloc.h

logger = logging.getLogger("gateway")


def configure() -> bool:
    """Fix glibc's mmap threshold for this process; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        done = False
    if not done:
        logger.warning("could not set malloc's mmap threshold: large bodies may leave memory behind")
    return done


def trim() -> None:
    """Give the free memory of every heap back to the system (glibc's malloc_trim): after a large one-off load
    (a token encoding builds tens of megabytes of tables, some of them only while it loads), whose freed pages
    would otherwise stay in the process among live ones."""
    if platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def right_sized(data: bytes) -> bytes:
    """`data` in an allocation of its own length, for bytes that are kept (a stored response, a cached answer).

    orjson (3.12 and later) hands back its bytes in the buffer it wrote them into, never shrunk: 4 KiB for a JSON
    of 100 bytes, 16 KiB for one of 1.5 KiB (measured with tracemalloc; ijl/orjson#483). Ten thousand stored
    responses held 200 MB rather than 13, and a bound on the sum of their lengths (responses.memory_max_mb,
    cache.memory.max_mb) held ten times what it said. One copy, made once per kept object, costs a few hundred
    instructions; bytes that are right-sized already (read from a socket or the store) are copied all the same."""
    return memoryview(data).tobytes()
