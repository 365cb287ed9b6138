"""Keep a training process's freed memory for its next batch.

glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised only as
such blocks are freed, to 32 MiB at most) with a fresh mapping from the kernel, and torch's
64-byte-aligned blocks leave small remainders that keep freed blocks from merging back into
the heap; so on defaults each training step faults its activations in again, and raising the
limits removes nearly all of those page faults (the commit that added this module has the
figures). The price is memory a
worker keeps after its peak, bounded by the trim threshold.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(megabytes: int) -> bool:
    """Serve blocks below `megabytes` from the heap and keep up to that much of it free.
    False where the C library is not glibc or refuses the values."""
    if megabytes <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    limit = min(megabytes * 1024 * 1024, 2**31 - 1)  # mallopt takes a C int
    if mallopt(M_MMAP_THRESHOLD, limit) and mallopt(M_TRIM_THRESHOLD, limit):
        return True
    log.warning("malloc refused to keep %d MiB; keeping its defaults", megabytes)
    return False
