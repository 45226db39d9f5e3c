"""Give a gateway worker's memory back after a burst of connections (issue 17).

What a burst of slow clients leaves behind is not Python objects: measured across 3,000 slow
clients (docs/gateway.md), the worker's live allocations were the same before and after
(gc objects 29,752 → 29,542; pymalloc's allocated blocks 12.3 → 12.3 MB), yet RSS stayed
14.6 MiB up. Two allocators kept the freed memory:

- pymalloc (Python's small-object allocator) hands out 1 MiB arenas and returns one to the
  system only when every block in it is free. The burst's objects (per connection: the
  protocol, the parser, a timer, each header line's strings) spread over new arenas, and the few
  long-lived objects made meanwhile (timers, futures, ints) pinned them: 660 empty 16 KiB pools
  (10.8 MB) stayed in arenas that could not be released.
- glibc's heap returns only its top on its own; the freed middle (5.7 MB) stays resident until
  malloc_trim(3) gives its free pages back.

The remedies, in the worker: Python objects come from the C allocator (PYTHONMALLOC=malloc,
which must be set before the interpreter starts, hence `exec_with_c_allocator`), so a freed
object frees its 4 KiB page rather than waiting for a whole arena; and `Trimmer`, once many
connections have gone, collects their garbage cycles and calls malloc_trim(0). Measured with
3,000 slow clients (header timeout 10 s, loaded machine): 42.8 MiB warm, 43.7 MiB (+2.0 %)
once they had gone, against 56.9 MiB (+35 %) before (pymalloc, no trim).
"""
from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from typing import Callable, Protocol

from gfs.memory import glibc
from gfs.sysstats import rss_bytes

ALLOCATOR_ENV = "PYTHONMALLOC"
TRIM_DROP = 256                 # connections gone since the last trim (or peak) before a trim
TRIM_INTERVAL_S = 1.0
TRIM_GROWTH = 32 << 20          # resident bytes grown since the last trim before a trim ...
TRIM_GROWTH_GAP_S = 10.0        # ... at most this often
# (Object bodies move through a worker in 1 MiB buffers, which it reuses from its heap instead of
# an mmap each — 256 page faults and zeroing per MiB, a third of its CPU in a large S3 GET:
# gfs/memory.py REUSED_BUFFERS_MMAP_THRESHOLD; the growth trim gives that heap back.)


def release_free_memory() -> bool:
    """Collect the garbage cycles (a closed connection's protocol, parser and exchanges refer
    to one another: freed by the cyclic collector, which an idle worker may not run for a long
    time), then malloc_trim(0): return the free pages of every glibc arena to the kernel (the
    middle of the heap too, not only its top). False where the C library has no malloc_trim."""
    gc.collect()
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def exec_with_c_allocator(program: str) -> None:
    """Start this process again (same pid, same arguments) with Python objects allocated by
    the C allocator, when PYTHONMALLOC is not set and glibc can trim. `program` is the file of
    the CLI entry point: nothing is done when this process runs another program (a test
    runner invoking the command in-process). Returns only when nothing was done."""
    if ALLOCATOR_ENV in os.environ or glibc() is None:
        return                                     # an explicit choice (e.g. pymalloc) is kept
    if os.path.realpath(sys.argv[0]) != os.path.realpath(program) \
            and os.path.basename(sys.argv[0]) != "gfs":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, ALLOCATOR_ENV: "malloc"})


class Connections(Protocol):
    connections: set

    def settle(self) -> int: ...


class Trimmer:
    """Every `interval_s`, look at the server's connections: when `drop` or more have gone since
    the most open at once (since the last trim), give the free memory back (`trim`); and once
    more when such a fall has stopped. That last one matters most: while some of a burst's
    connections are still open, their objects keep most freed pages partly used, and only when
    the last of them has gone are those pages whole and free.

    Also when the resident size has grown by `growth` bytes since the last trim, at most every
    `growth_gap_s`: large bodies leave freed buffers in the heap (REUSED_BUFFERS_MMAP_THRESHOLD), which
    a trim gives back — during a long transfer at the cost of faulting in again what it still
    uses, once per gap."""

    def __init__(self, server: Connections, trim: Callable[[], bool] = release_free_memory,
                 drop: int = TRIM_DROP, interval_s: float = TRIM_INTERVAL_S,
                 on_trim: Callable[[], None] | None = None,
                 rss: Callable[[], int] = rss_bytes, growth: int = TRIM_GROWTH,
                 growth_gap_s: float = TRIM_GROWTH_GAP_S,
                 clock: Callable[[], float] = time.monotonic):
        self.server = server
        self.trim = trim
        self.on_trim = on_trim
        self.drop = drop
        self.interval_s = interval_s
        self.rss, self.growth, self.growth_gap_s, self.clock = rss, growth, growth_gap_s, clock
        self.peak = 0                  # most open at once since the last trim
        self.last = 0                  # open at the last look
        self.falling = False           # trimmed for a fall that has not stopped yet
        self.trims = 0
        self.trimmed_rss = rss()       # resident bytes after the last trim (or at the start)
        self.trimmed_at = clock()
        self._timer: asyncio.TimerHandle | None = None

    def check(self) -> bool:
        """One look; True when it trimmed."""
        self.peak = max(self.peak, self.server.settle())
        now = len(self.server.connections)
        went_down, self.last = now < self.last, now
        if self.peak - now >= self.drop:
            self.falling = True
        elif self.falling and not went_down:
            self.falling = False                   # the fall is over: the last trim for it
        elif not self._grown():
            return False
        self.trim()
        self.trims += 1
        self.peak = now
        self.trimmed_rss, self.trimmed_at = self.rss(), self.clock()
        if self.on_trim is not None:
            self.on_trim()
        return True

    def _grown(self) -> bool:
        return (self.clock() - self.trimmed_at >= self.growth_gap_s
                and self.rss() - self.trimmed_rss >= self.growth)

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def tick():
            self.check()
            self._timer = loop.call_later(self.interval_s, tick)
        self._timer = loop.call_later(self.interval_s, tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
