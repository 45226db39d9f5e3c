"""A snapshot from the leader, written into place while it arrives.

pysyncobj hands a follower the leader's snapshot file piece by piece (1 MiB each, in its tick
thread) and, at the last piece, calls the install (master/raft_snapshots.py `_install_snapshot`)
— also in the tick thread, which meanwhile neither answers the leader nor votes. Copying the store out of
the received file there took seconds at a million files (243 MiB, copied twice and fsync'd):
long enough for a leader whose only other live member was this follower to lose its quorum
and step down (pysyncobj's leader fallback), election after election.

`SnapshotReceiver` writes the store image of the file (what follows its header) into the
store's install location (MetadataState.install_target) as each piece arrives, and makes it
durable every SYNC_EVERY bytes (in a thread of its own: PeriodicSync), so the install only
syncs the tail and renames. It hashes the image as it goes (master/snapshot_format.py), so the
install checks it against the header's checksum without reading it again. The install uses the
image only if its header is byte for byte the one of the file pysyncobj completed; otherwise (a
transfer that restarted, a write that failed) it copies from the file as before, hashing that
copy.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from master.snapshot_format import Image, SnapshotStream

log = logging.getLogger(__name__)

SYNC_EVERY = 32 << 20       # bytes written between fdatasyncs of a file being received


class PeriodicSync:
    """Make a file being written durable on the way: once SYNC_EVERY bytes went into it since
    the last sync began, an fdatasync starts in a thread of its own (one at a time), so the sync
    at its end (`sync`) is short — and the writer (the tick thread) never waits on the way for
    a disk busy with other writes (a sync there that outlasts the election timeout makes the
    follower campaign against a live leader). A failed sync on the way is raised by `sync`:
    after a failed fdatasync a later one may succeed without the lost pages."""

    def __init__(self) -> None:
        self.unsynced = 0
        self._running: threading.Thread | None = None
        self._error: OSError | None = None

    def wrote(self, f, count: int) -> None:
        self.unsynced += count
        if self.unsynced < SYNC_EVERY or (self._running is not None
                                          and self._running.is_alive()):
            return
        f.flush()
        fd = os.dup(f.fileno())       # the file may be closed (abandoned) while it syncs
        self.unsynced = 0
        self._running = threading.Thread(target=self._sync_and_close, args=(fd,),
                                         name="snapshot-sync", daemon=True)
        self._running.start()

    def sync(self, f) -> None:
        """Everything written to `f` is durable when this returns (OSError if not)."""
        f.flush()
        self.settle()
        os.fdatasync(f.fileno())
        self.unsynced = 0

    def settle(self) -> None:
        """Wait for the sync on its way, if any; OSError if one on the way failed."""
        if self._running is not None:
            self._running.join()
            self._running = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _sync_and_close(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._error = exc
        finally:
            os.close(fd)


class SnapshotReceiver:
    """Tick thread only. `target()` gives a fresh file to write the store image into."""

    def __init__(self, target: Callable[[], str]):
        self._target = target
        self._file = None                  # the image being written; None: not receiving
        self._stream = SnapshotStream()    # the prefix as received; the image's hash
        self._sync = PeriodicSync()
        # the prefix of a complete, durable image, and what that image is
        self._ready: tuple[bytes, Image] | None = None

    def piece(self, data: bytes, first: bool, last: bool) -> None:
        """One piece of the snapshot file (pysyncobj's setTransmissionData)."""
        try:
            if first:
                self.abandon()
                self._file = open(self._target(), "wb")
            elif self._file is None:
                return                   # a piece of a transfer this receiver gave up on
            self._take(data)
            if last:
                self._finish()
        except (OSError, ValueError) as exc:
            log.warning("writing the snapshot being received into place failed (%s); it will "
                        "be copied from the received file instead", exc)
            self.abandon()

    def take_ready(self, prefix: bytes) -> Image | None:
        """The length and digest of the complete, durable image in place, if it is the one of
        the file that starts with `prefix`, else None (it is then the install's: the receiver
        forgets it)."""
        ready, self._ready = self._ready, None
        return ready[1] if ready is not None and ready[0] == prefix else None

    def abandon(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
        self._stream = SnapshotStream()
        self._sync = PeriodicSync()
        self._ready = None

    def _take(self, data: bytes) -> None:
        body = self._stream.take(data)       # the header is kept, up to the image
        if body:
            self._file.write(body)
            self._sync.wrote(self._file, len(body))

    def _finish(self) -> None:
        if not self._stream.in_image:
            raise ValueError("the snapshot ended inside its header")
        self._sync.sync(self._file)
        self._file.close()
        self._file = None
        self._ready = (bytes(self._stream.prefix), self._stream.image())
