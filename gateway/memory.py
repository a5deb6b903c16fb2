"""The C allocator's settings: large requests give their memory back to the system, and so does a big load.

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
