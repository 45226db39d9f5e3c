"""Keep a daemon's memory flat while it streams large buffers.

Data moves in 1 MiB pieces through many threads. glibc gives each thread its own malloc arena
(up to 8 per core), and 1 MiB buffers freed into an arena are rarely returned to the system:
resident memory then grows with the number of threads times the buffers they ever held
(measured: chunkservers at 0.6–1 GiB after four concurrent 1 GiB puts and gets). glibc also
raises its mmap threshold after the first large free, after which 1 MiB buffers come from the
heap and fragment it. Capping the arenas at 2 and pinning the mmap threshold at 256 KiB makes
every 1 MiB buffer an mmap that is returned to the kernel when freed; the price is a page fault
per 4 KiB moved.

Chunkservers, which move every replica's bytes, and gateway workers, which move object bodies,
pin the threshold at 2 MiB instead (`REUSED_BUFFERS_MMAP_THRESHOLD`): with the arenas still capped
at 2 and the threshold fixed (no dynamic raise), their 1 MiB buffers are reused from the heap,
and a free heap top beyond 4 MiB is returned (a gateway worker also trims: gateway/memory.py). Measured (3 chunkservers, 1 GiB `gfs put`/`get` three times, then three gets and a
put at once, each tree once): chunkserver CPU per GB of a put ~1.1 → 0.8–0.9 s after the first,
of the four at once 2.4–2.55 → 2.2–2.35; resident size after all of it 62 → 67 MiB.

Masters pin it at 4 MiB (`LMDB_TXN_MMAP_THRESHOLD`): every applied log entry is an LMDB write
transaction, whose page lists would otherwise be mapped and unmapped each time.
"""
from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim            # glibc only (not musl)
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply every (parameter, value) with mallopt(3); True if glibc took them all."""
    libc = glibc()
    if libc is None:
        return False
    return all([libc.mallopt(param, value) == 1 for param, value in settings])


REUSED_BUFFERS_MMAP_THRESHOLD = 2 << 20      # 1 MiB buffers come back from the heap
# An LMDB write transaction mallocs its page lists (1 MiB and 2 MiB) when it begins and frees
# them when it ends: above the default threshold that is two mmaps and two munmaps per applied
# log entry on every master (~2,400 a second each at 1,200 creates/s, perf stat). Masters pin
# the threshold above them, so the lists are reused from the heap.
LMDB_TXN_MMAP_THRESHOLD = 4 << 20


def tune_malloc(arenas: int = 2, mmap_threshold: int = 256 * 1024) -> bool:
    """Apply the settings with mallopt(3); False where glibc is not available."""
    thresholds = [(M_MMAP_THRESHOLD, mmap_threshold),
                  (M_TRIM_THRESHOLD, mmap_threshold * 2)] if mmap_threshold else []
    return _mallopt((M_ARENA_MAX, arenas), *thresholds)


def reuse_large_buffers(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """The opposite trade for a process that moves a file's bytes and then exits (`gfs get`,
    `gfs put`) or one whose buffers are bounded by a cache of its own (`gfs mount`): freed
    megabyte buffers stay in the heap and the next ones reuse them, instead of an mmap and
    256 page faults per MiB moved (measured for `gfs get` of 1 GiB: 270,000 page faults and
    2.1 s of system time before, 9,000 and 1.0 s with it; a mount reading a file: 1,026
    faults per MiB and most of its CPU before, 15 with it). False where glibc is not
    available."""
    return _mallopt((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold))
