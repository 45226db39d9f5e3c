"""The scrubber: a background thread that reads and verifies every chunk of a store, so damage
is found (and repaired from the other replicas) before a reader needs the data.

- A pass verifies every stored chunk that is not already marked corrupt: the never-verified
  first, then the longest-unverified, by handle within each group. A pass starts every
  `interval_s` seconds, counted from the start of the previous one; a pass that takes longer
  is followed by the next one right away. The first pass starts when the scrubber starts.
- Reading is paced by a token bucket to `rate_bytes_per_s` (0: no passes at all; requested
  checks still run, unpaced), so scrubbing costs a bounded share of the disk.
- `request(handle, version)` queues a check ahead of the pass (the master asks for one when a
  reader reported a replica bad); requests are served between chunks of a pass and while idle.
- Both tiers are scrubbed alike: `ChunkStore.read` serves a cold chunk by checking its frame
  index, decompressing frame by frame and checking every block against the sidecar's sums of
  the uncompressed bytes, so a damaged index, an undecodable frame and a wrong block are all
  found. Pacing counts uncompressed bytes (a cold pass reads less from its disk). A chunk moved
  to the other tier during its check is verified on the files the read opened (the old copy,
  identical in content); the new copy was verified block by block by the move itself.
- Damage is found by `ChunkStore.read`, which marks the replica corrupt itself; the scrubber
  then counts it and calls `on_corrupt()` (wired to the heartbeater's poke, so the master hears
  at once and schedules a repair).

The store lock is never held while data is read (the store only takes it to open the files),
and stop() returns promptly: the pacing sleep and the idle wait both end when it is called.
The time of each chunk's last verification is kept in memory only: after a restart every chunk
counts as never verified, and the first pass covers them all.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from prometheus_client import Counter, Gauge

from chunkserver.store import ChunkMeta, ChunkStore
from gfs.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from gfs.transfer import TokenBucket

log = logging.getLogger(__name__)

SCRUB_BYTES = Counter("gfs_chunkserver_scrub_bytes_total", "Chunk bytes verified by the scrubber")
SCRUB_CORRUPT = Counter("gfs_chunkserver_scrub_corrupt_total",
                        "Corrupt replicas found by the scrubber")
CORRUPT_REPLICAS = Gauge("gfs_chunkserver_corrupt_replicas",
                         "Replicas on this chunkserver currently marked corrupt")


class Scrubber:
    def __init__(self, store: ChunkStore, rate_bytes_per_s: int, interval_s: float,
                 on_corrupt: Callable[[], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None):
        if type(rate_bytes_per_s) is not int or rate_bytes_per_s < 0:
            raise InvalidArgument(f"scrub rate must be an int >= 0 (bytes/s), "
                                  f"not {rate_bytes_per_s!r}")
        if not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise InvalidArgument(f"scrub interval must be > 0 seconds, not {interval_s!r}")
        self.store = store
        self.rate = rate_bytes_per_s
        self.interval = float(interval_s)
        self.on_corrupt = on_corrupt
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()        # requests and stats
        self._requests: OrderedDict[int, int] = OrderedDict()     # handle -> version (0: any)
        self._verified: dict[int, tuple[int, float]] = {}         # handle -> (version, when)
        self._bucket = (TokenBucket(rate_bytes_per_s, clock=clock,
                                    sleep=sleep if sleep is not None else self._stop.wait)
                        if rate_bytes_per_s else None)
        self._scrubbed_bytes = 0
        self._passes = 0
        self._corrupt_found = 0
        self._last_pass_s = 0.0
        self._thread: threading.Thread | None = None
        CORRUPT_REPLICAS.set_function(lambda: len(store.corrupt()))

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scrubber", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, handle: int, version: int = 0) -> None:
        """Check this replica soon, ahead of the pass (version 0: whatever version is stored)."""
        with self._lock:
            self._requests[handle] = version
        self._wake.set()

    def stats(self) -> dict:
        with self._lock:
            return {"scrubbed_bytes": self._scrubbed_bytes, "passes": self._passes,
                    "corrupt_found": self._corrupt_found, "last_pass_s": self._last_pass_s,
                    "pending_requests": len(self._requests)}

    # -- work ------------------------------------------------------------------------------------

    def run_pass(self) -> int:
        """Verify every chunk not already marked corrupt, serving requests in between; return
        how many were found corrupt. Runs in the caller's thread (the loop's, or a test's);
        a pass cut short by stop() is not counted."""
        started = self._clock()
        corrupt = self.store.corrupt()
        todo = sorted((m for m in self.store.chunks() if corrupt.get(m.handle) != m.version),
                      key=self._priority)
        found = 0
        for meta in todo:
            self.serve_requests()
            if self._stop.is_set():
                return found
            seen = self._verified.get(meta.handle)
            if (seen is not None and seen[0] == meta.version and seen[1] >= started) or \
                    self.store.is_corrupt(meta.handle, meta.version):
                continue        # checked on request (or found corrupt by a read) meanwhile
            if self._check(meta.handle, meta.version) is False:
                found += 1
        if self._stop.is_set():
            return found
        elapsed = self._clock() - started
        with self._lock:
            self._passes += 1
            self._last_pass_s = elapsed
        log.info("scrub pass done: %d chunks in %.1f s, %d corrupt", len(todo), elapsed, found)
        return found

    def serve_requests(self) -> None:
        """Check every queued request now."""
        while not self._stop.is_set():
            with self._lock:
                if not self._requests:
                    return
                handle, version = self._requests.popitem(last=False)
            meta = self.store.get(handle)
            if meta is None or (version and meta.version != version):
                continue                       # gone or replaced meanwhile: nothing to check
            if self.store.is_corrupt(handle, meta.version):
                self._notify()                 # already known: just make sure the master hears
                continue
            self._check(handle, meta.version)

    def _priority(self, meta: ChunkMeta) -> tuple:
        seen = self._verified.get(meta.handle)
        if seen is None or seen[0] != meta.version:
            return (0, 0.0, meta.handle)
        return (1, seen[1], meta.handle)

    def _check(self, handle: int, version: int) -> bool | None:
        """Verify one replica, paced. True: intact; False: corrupt; None: gone, replaced, or
        interrupted by stop()."""
        try:
            pieces = self.store.read(handle, version=version)
            try:
                for piece in pieces:
                    n = len(piece)
                    SCRUB_BYTES.inc(n)
                    with self._lock:
                        self._scrubbed_bytes += n
                    if self._bucket is not None:
                        self._bucket.take(n)
                    if self._stop.is_set():
                        return None
            finally:
                pieces.close()
        except DataLoss as err:                # the store has marked it already
            log.info("scrubber found a corrupt replica: %s", err)
            SCRUB_CORRUPT.inc()
            with self._lock:
                self._corrupt_found += 1
            self._verified.pop(handle, None)
            self._notify()
            return False
        except (NotFound, FailedPrecondition):
            self._verified.pop(handle, None)
            return None
        except OSError as err:                 # an I/O error is not proof of damage: retry later
            log.warning("scrubber could not read chunk %016x: %s", handle, err)
            return None
        self._verified[handle] = (version, self._clock())
        return True

    def _notify(self) -> None:
        if self.on_corrupt is not None:
            try:
                self.on_corrupt()
            except Exception:
                log.exception("scrubber on_corrupt callback failed")

    def _run(self) -> None:
        next_pass = self._clock()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.serve_requests()
                if self.rate and self._clock() >= next_pass:
                    started = self._clock()
                    self.run_pass()
                    next_pass = started + self.interval
                    continue
            except Exception:                  # never let the thread die
                log.exception("scrubber failed; retrying in a minute")
                next_pass = self._clock() + 60.0
            timeout = max(0.0, next_pass - self._clock()) if self.rate else None
            self._wake.wait(timeout)
