"""The C heap of a long-running process (server, worker): fewer malloc arenas, free pages returned.

Measured with bench/growth (SQLite, 20,000 events): glibc gave each thread that allocated its
own arena (the database threads of `asyncio.to_thread`, up to 8 x cores), and kept what was
freed in them: 25 MB of the heap was free yet resident. Two arenas and a periodic
`malloc_trim` keep that small; both are glibc calls, and nothing happens on other C libraries.

Large blocks go to their own mappings, returned when freed: glibc's default raises its mmap
threshold to the size of the largest such block freed (up to 32 MiB), after which every block
of that size comes from an arena. One operator's sign-in (argon2id, 19 MiB) then left 19 MiB
resident in each arena it ran in (bench/growth: 99 -> 118 -> 137 MB over three sign-ins), and
the pages' large reads another 20-30 MB of peak; a fixed threshold keeps them out of the arenas.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os

# Arenas for the whole process. Threads share them (a lock per allocation, uncontended enough:
# the GIL serialises most allocating work); bench/growth held 15 MB less RSS at 2 than at
# glibc's default. An operator's MALLOC_ARENA_MAX wins.
ARENAS = 2
# How often the heap's free pages go back to the system. A trim walks the free chunks (well
# under a millisecond here) in a thread; the pages it gives back cost a fault when reused.
TRIM_SECONDS = 10.0
# Blocks from this size up are mapped apart and unmapped when freed (glibc's starting value);
# setting it turns off glibc's raising of it. An operator's MALLOC_MMAP_THRESHOLD_ wins.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt's parameter numbers, from glibc's malloc.h


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such function)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas() -> bool:
    """Cap the malloc arenas at ARENAS and fix the mmap threshold at MMAP_THRESHOLD (call at
    start, before the threads); False if not glibc or if both are set in the environment
    (glibc read them already)."""
    libc = _glibc()
    if libc is None:
        return False
    tuned = False
    if "MALLOC_ARENA_MAX" not in os.environ:
        tuned |= bool(libc.mallopt(_M_ARENA_MAX, ARENAS))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        tuned |= bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return tuned


def trim() -> bool:
    """Give the heap's free pages back to the system; False if not glibc or nothing returned."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trimming(seconds: float = TRIM_SECONDS) -> None:
    """Trim every `seconds`, off the event loop, until cancelled."""
    if _glibc() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(trim)
