"""Keeping glibc from handing freed chunk buffers back to the kernel between chunks.

A transfer allocates and frees several 1 MiB buffers per chunk (the bytes read, the message,
its serialised form, gRPC's copy). By default glibc gives the top of its heap back to the
kernel once a little is free there (128 KiB, or twice the largest block freed), so every
chunk maps fresh pages again and the kernel zeroes them. Measured here, page faults took
more CPU than the transfer itself: a 1 GiB download cost the server 3.6 s of CPU instead of
1.5 s. Holding on to up to 16 MiB of freed heap per arena keeps the same pages in use
(64 MiB measured no faster), at the price of that much resident memory after a transfer;
at most two arenas keep it from multiplying by the number of threads.

The setting is process-wide; it is applied once, when the first transfer starts (or by
`keep_freed_memory()` at start-up), and only under glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Free bytes at a heap's top before glibc trims it, and the size from which allocations are
# mapped separately (each a fresh mapping, faulted in page by page) instead.
TRIM_THRESHOLD_BYTES = 16 << 20
MMAP_THRESHOLD_BYTES = 32 << 20
TOP_PAD_BYTES = 8 << 20
# Each thread that allocates may get an arena of its own, and each arena keeps the freed
# memory above: a transfer's threads (gRPC's, the disk's, the hash's, read-ahead) could hold
# 100 MiB between them. Two arenas bound that and are contended little at these rates.
ARENA_MAX = 2

_applied = False


def keep_freed_memory() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            and libc.mallopt(_M_TOP_PAD, TOP_PAD_BYTES)
            and libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
        )
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("could not tune malloc; transfers will use more CPU")
