"""Process memory: cap glibc's malloc arenas, so a worker's native memory levels off."""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc gives each thread that allocates at once an arena of its own, up to 8 per core. A worker's
# threads (the metadata writer, file I/O, password checks, the collector's scans) each left memory
# stranded in one; with two, a worker's memory levels off (README, the soak under "Speed").
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let this process's malloc use at most `arenas` arenas from now on; False where the C library
    is not glibc (then nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done: int = mallopt(_M_ARENA_MAX, arenas)
    return done == 1
