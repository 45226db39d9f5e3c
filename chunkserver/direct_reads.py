"""Large reads of hot chunks around the page cache (O_DIRECT) unless they are read again, read
ahead while the span before is verified and sent.

A bulk read (chunkserver/bulk.py) sends a chunk span by span (1 MiB). Through the page cache a
cold span is read by the disk into fresh cache pages and then copied out of them: on this
project's VMs (free memory is handed back to the host) the first touch of a fresh page costs a
fault on the host, and that copy was half of a chunkserver's CPU while four clients read
(perf: 51 % in _copy_to_iter; 1.5–1.9 CPU s per GiB against 0.6–0.8 for one client reading
pages the kernel had just freed). With O_DIRECT the disk writes into one of a connection's
three page-aligned buffers, which stay mapped, and nothing is copied; the disk reads the next
two spans while the current one is verified and sent (the kernel's read-ahead does that for
buffered reads; O_DIRECT has none).

The first bulk read of a span's bytes goes around the page cache. So that a chunk read again and
again is cached like any hot file, the mebibytes of each chunk read are remembered for
REREAD_WINDOW_S (as a bit per MiB of an 8 MiB region): a span whose every MiB was read within
that window goes through the page cache (and fills it), and later reads find it there. A
sequential reader asking for small consecutive ranges is not taken for a re-reader (each of
its spans has a MiB nobody read yet).
(Asking the cache first with `RWF_NOWAIT` does not work: a refused read still starts the
kernel's read-ahead into fresh cache pages.)
Where O_DIRECT is refused (EINVAL: tmpfs before Linux 6.6, some FUSE file systems) spans are
read through the page cache as before.
"""
from __future__ import annotations

import errno
import math
import mmap
import os
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

ALIGN = 4096                # of O_DIRECT buffers, offsets and lengths
RING = 3                    # buffers per connection: the span being sent and two being read
READERS = 8                 # threads of a chunkserver doing the disk reads of every connection
REREAD_WINDOW_S = 600.0     # bytes read again within it are read through the page cache
SLOT_SHIFT = 20             # a MiB: the unit remembered as read
REGION = 8 << 20            # bytes of a chunk remembered in one entry (a bit per MiB)
REMEMBERED = 16384          # regions remembered (128 GiB; the oldest forgotten)


class SpanRing:
    """A bulk connection's read buffers: RING page-aligned spans, reused by every read on it."""

    def __init__(self, span_bytes: int):
        self.span_bytes = span_bytes
        self._maps: list[mmap.mmap] = []
        self._views: list[memoryview] = []

    @property
    def views(self) -> list[memoryview]:
        """The buffers, mapped at the connection's first read (one that only writes, as a
        chain's connection does, maps none)."""
        if not self._views:
            self._maps = [mmap.mmap(-1, self.span_bytes) for _ in range(RING)]
            self._views = [memoryview(m) for m in self._maps]
        return self._views

    def close(self) -> None:
        for v in self._views:
            try:
                v.release()
            except BufferError:
                pass
        for m in self._maps:
            try:
                m.close()
            except BufferError:      # a span still viewed by a failed send's traceback
                pass


class DirectReads:
    """The read-ahead threads and the memory of chunks read around the cache of one store."""

    def __init__(self, readers: int = READERS, window_s: float = REREAD_WINDOW_S):
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="chunk-read")
        self._window = window_s
        self._lock = threading.Lock()
        # (handle, version, region) -> (when, bit mask of the MiBs read)
        self._read: OrderedDict[tuple[int, int, int], tuple[float, int]] = OrderedDict()
        self._refused = False      # the file system refused O_DIRECT: page cache from now on

    def around_cache(self, handle: int, version: int, spans: list[tuple[int, int]]
                     ) -> list[bool]:
        """For each (offset, length) span of a read of chunk (handle, version): should it go
        around the page cache? Yes unless every MiB it touches was read within the window (it
        is wanted again: cache it). Records the MiBs of this read as read now."""
        now = time.monotonic()
        slots_per_region = REGION >> SLOT_SHIFT
        answers = []
        with self._lock:
            before: dict[int, int] = {}      # region -> MiBs read within the window before
            touched: dict[int, int] = {}     # region -> MiBs this read touches
            for at, want in spans:
                again = True
                for slot in range(at >> SLOT_SHIFT, (at + max(want, 1) - 1 >> SLOT_SHIFT) + 1):
                    region, bit = divmod(slot, slots_per_region)
                    if region not in before:
                        when, mask = self._read.pop((handle, version, region), (-math.inf, 0))
                        before[region] = mask if now - when < self._window else 0
                    again = again and bool(before[region] >> bit & 1)
                    touched[region] = touched.get(region, 0) | 1 << bit
                answers.append(not again and not self._refused)
            for region, mask in touched.items():           # (re)inserted: the newest last
                self._read[(handle, version, region)] = (now, before[region] | mask)
            while len(self._read) > REMEMBERED:
                self._read.popitem(last=False)
        return answers

    def spans(self, fd: int, spans: list[tuple[int, int]], ring: SpanRing,
              around_cache: list[bool]) -> Iterator[memoryview]:
        """The bytes of each (offset, length) span of the file open as `fd`, in order, each a
        view of one of `ring`'s buffers valid until the next is asked for; around the page
        cache where `around_cache` says so. Up to RING - 1 spans after it are being read
        meanwhile. A short view means the file ended early."""
        direct_fd = self._open_direct(fd) if any(around_cache) else -1
        pending: deque[Future] = deque()

        def submit(i: int) -> None:
            at, want = spans[i]
            pending.append(self._pool.submit(self._fill, fd,
                                             direct_fd if around_cache[i] else -1,
                                             ring.views[i % RING], at, want))

        try:
            for i in range(min(RING, len(spans))):
                submit(i)
            for i in range(len(spans)):
                n = pending.popleft().result()
                yield ring.views[i % RING][:n]
                if i + RING < len(spans):
                    submit(i + RING)
        finally:
            for f in pending:               # no read may still write into the ring after this
                if not f.cancel():
                    try:
                        f.result()
                    except OSError:
                        pass
            if direct_fd >= 0:
                os.close(direct_fd)

    def _open_direct(self, fd: int) -> int:
        try:
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.EINVAL:
                self._refused = True
            return -1

    def _fill(self, fd: int, direct_fd: int, buf: memoryview, at: int, want: int) -> int:
        """Read `want` bytes at `at` into `buf`: around the page cache (`direct_fd`), else
        through it. Returns the bytes read."""
        if direct_fd >= 0:
            padded = -(-want // ALIGN) * ALIGN
            try:
                return min(want, os.preadv(direct_fd, [buf[:padded]], at))
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._refused = True
        return os.preadv(fd, [buf[:want]], at)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
