"""Raft snapshots written by a thread of their own, so the leader keeps committing meanwhile.

pysyncobj writes a snapshot (its "full dump") from its tick thread when it compacts the log: the
serializer must leave a complete file before it returns, and a custom serializer cannot fork. For
gfs that is a copy of the whole LMDB store — seconds for a million files — during which the tick
thread neither replicates, commits nor answers heartbeats (followers then call elections).

`BackgroundSerializer` replaces pysyncobj's `Serializer` (same interface, same file, same
transmission of the finished file to followers). In the tick thread, `serialize` only *pins* the
state at the entry being snapshotted (`begin`: an LMDB read transaction, which sees exactly that
state however far the apply path moves on) and starts a thread writing the file from it. The
tick thread polls `checkSerializing` as it already does; when the thread has finished, the file
replaces the previous snapshot there, and pysyncobj compacts the log up to it — so the log is
never cut before the snapshot covering it is durable.

A snapshot installed from the leader meanwhile (`superseded`) makes the one being written stale:
it is thrown away instead of replacing the newer file.

A big store is not copied for a short log: once the last snapshot is over BIG_SNAPSHOT, a
compaction pysyncobj asks for (by entries or time) waits until the log holds a LOG_SHARE of the
snapshot's size, or BIG_SNAPSHOT (the log is kept in memory). Otherwise the write amplification
has no bound: at 10,000,000 files each compaction of 1,000 small entries (~0.3 MB of log)
copied a 2.4 GB store, on every master at once, every ~35 s (161 copies in one benchmark run).
The log is never cut without a snapshot, so it is what a lagging follower catches up
from the longer it is (LMDB holds the applied state: a restart does not replay it).

No new snapshot is started while one is being sent to a follower: the log compaction that follows
it would remove the entries that follower needs after the snapshot it is receiving, and it
would be sent a snapshot again — for a big store and a busy group, over and over without ever
catching up (measured at 1,000,000 files: 4.8 of 243 MiB after 4 minutes). A transmission that
has not moved for SEND_IDLE_S no longer holds compaction back, nor does one whose last piece
went out SEND_IDLE_S ago (time for the follower to install it and take the entries after it).

pysyncobj's leader reads, compresses and queues the next piece of a snapshot as fast as it can
for a whole heartbeat period, whether or not the socket has taken the previous ones: the queue
grows by megabytes a tick and every partial send copies what is left of it, until the tick
thread does nothing else (measured: 8 MiB sent in 3.5 minutes, then an election). With
`backlog` (bytes still queued on the follower's connection), a piece is handed out only while
less than SEND_BACKLOG is waiting; otherwise PAUSE, which the transport does not send.

Every piece handed out is checked on its way (master/snapshot_sender.py): the last one only
goes out for a file that is whole. A file found damaged, cut off or unreadable while it is sent
stops going out to every follower, no longer holds compaction back, and is reported (`damaged`:
the node moves it aside and has a new one written). While there is no file to send, a follower
that needs one gets None (pysyncobj then sends a message without a piece, which still tells the
follower its leader is alive), at most one a PAUSE_WAIT_S.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from gfs.errors import DataLoss
from gfs.fsutil import fsync_path
from master.snapshot_receiver import PeriodicSync
from master.snapshot_sender import OutgoingSnapshot

log = logging.getLogger(__name__)

# begin(tmp_path, (last_entry, prev_entry, cluster)) runs in the tick thread and returns the
# function that writes the snapshot to tmp_path (run in the writer thread).
Begin = Callable[[str, tuple], Callable[[], None]]
SEND_IDLE_S = 30.0
BIG_SNAPSHOT = 64 << 20
LOG_SHARE = 0.25
SEND_BACKLOG = 2 << 20
PAUSE_WAIT_S = 0.001
PAUSE = (b"", False, False)     # "nothing this time": never a real piece (an empty one is last)


class BackgroundSerializer(Serializer):
    """pysyncobj's Serializer with the dump written off the tick thread (module docstring)."""

    def __init__(self, path: str, transmission_batch: int, begin: Begin,
                 deserializer: Callable, written: Callable[[int], None],
                 backlog: Callable[[object], int] | None = None,
                 receiver: Callable[[bytes, bool, bool], None] | None = None,
                 damaged: Callable[[BaseException], None] | None = None,
                 log_bytes: Callable[[], int] | None = None):
        """`receiver`: also given every piece received from the leader
        (master/snapshot_receiver.py); `damaged`: called (tick thread) when the snapshot file
        turned out damaged while it was being sent, with the reason; `log_bytes`: the size of
        the log that a compaction would cut (module docstring: big stores)."""
        super().__init__(path, transmission_batch, False, begin, deserializer, None)
        self._path = path
        self._batch = transmission_batch
        self._damaged = damaged
        self._outgoing: dict[object, OutgoingSnapshot] = {}     # follower -> its transmission
        self._unopened_said = False     # that the file could not be opened, since it last could
        self._receiver = receiver
        self._incoming_sync = PeriodicSync()
        self._begin = begin
        self._written = written        # called (tick thread) with the entry index once in place
        self._backlog = backlog
        self._log_bytes = log_bytes
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._id = None
        self._index = 0
        self._generation = 0           # bumped by every install from the leader
        self._started_generation = 0
        self._sending: dict[object, float] = {}    # follower -> when a chunk last went out
        self.clock = time.monotonic

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def superseded(self) -> None:
        """A snapshot from the leader replaced the state: the one being written is stale."""
        self._generation += 1

    def serialize(self, data, id) -> None:
        """Tick thread: pin the state and start writing (pysyncobj's data[1:] is last entry,
        previous entry, cluster)."""
        if self._thread is not None or self.sending() or not self.worth_writing():
            return                          # pysyncobj asks again on a later tick
        tmp = self._path + ".tmp"
        write = self._begin(tmp, tuple(data[1:]))
        self._id, self._index = id, data[1][1]
        self._error = None
        self._started_generation = self._generation

        def run() -> None:
            try:
                write()
            except BaseException as err:       # reported to the tick thread
                self._error = err

        self._thread = threading.Thread(target=run, name="raft-snapshot", daemon=True)
        self._thread.start()

    def checkSerializing(self):
        """Tick thread: SERIALIZING while the thread writes; then the file is put in place
        (SUCCESS: pysyncobj compacts the log up to `id`) or dropped (FAILED)."""
        if self._thread is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        if self._thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING, self._id
        self._thread = None
        tmp = self._path + ".tmp"
        if self._error is not None or self._generation != self._started_generation:
            if self._error is not None:
                log.error("writing the snapshot at index %d failed: %s", self._index, self._error)
            else:
                log.info("snapshot at index %d dropped: a newer one came from the leader",
                         self._index)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            return SERIALIZER_STATE.FAILED, self._id
        os.replace(tmp, self._path)
        fsync_path(os.path.dirname(os.path.abspath(self._path)))
        self._restart_transmissions()
        self._written(self._index)
        return SERIALIZER_STATE.SUCCESS, self._id

    def worth_writing(self) -> bool:
        """Is the log long enough, beside the last snapshot's size, to copy the store for it
        (module docstring)? Always when there is no snapshot, or a small one."""
        if self._log_bytes is None:
            return True
        try:
            size = os.stat(self._path).st_size
        except OSError:
            return True
        return size <= BIG_SNAPSHOT or \
            self._log_bytes() >= min(size * LOG_SHARE, BIG_SNAPSHOT)

    def sending(self) -> bool:
        """Is a snapshot being sent to a follower (a chunk went out within SEND_IDLE_S)?"""
        now = self.clock()
        for node, last in list(self._sending.items()):
            if now - last >= SEND_IDLE_S:
                del self._sending[node]
        return bool(self._sending)

    def getTransmissionData(self, transmissionID):
        """Tick thread: the next piece of the snapshot file for one follower, checked on its
        way (module docstring); PAUSE while the connection has a backlog; None when there is
        nothing to send."""
        if self._backlog is not None and self._backlog(transmissionID) >= SEND_BACKLOG:
            time.sleep(PAUSE_WAIT_S)    # pysyncobj asks again at once, for a whole tick
            return PAUSE
        out = self._outgoing.get(transmissionID)
        if out is None:
            name = getattr(transmissionID, "address", transmissionID)
            try:
                out = OutgoingSnapshot(self._path, f"the snapshot being sent to {name}")
            except OSError as exc:      # none yet, or moved aside: one is being written
                if not self._unopened_said:
                    self._unopened_said = True
                    log.warning("no snapshot to send to %s until one is written (%s)", name, exc)
                return self._nothing(transmissionID)
            self._unopened_said = False
            self._outgoing[transmissionID] = out
        try:
            data = out.next_piece(self._batch)
        except (OSError, ValueError, DataLoss) as exc:
            self._send_failed(transmissionID, out, exc)
            return self._nothing(transmissionID)
        if data[2]:
            del self._outgoing[transmissionID]
            out.close()
        # also after the last piece: the follower installs it, then needs the entries that
        # follow it, which a compaction now would take away (SEND_IDLE_S later, it no longer
        # holds compaction back)
        self._sending[transmissionID] = self.clock()
        return data

    def _nothing(self, transmissionID) -> None:
        self._sending.pop(transmissionID, None)
        time.sleep(PAUSE_WAIT_S)        # pysyncobj asks again at once, for a whole tick
        return None

    def _send_failed(self, transmissionID, out: OutgoingSnapshot, exc: BaseException) -> None:
        """The file being sent is damaged, cut off or unreadable: no more of it goes out, to
        any follower, and it holds compaction back no longer; `damaged` moves it aside. (A file
        replaced meanwhile by a newer one is only no longer sent.)"""
        del self._outgoing[transmissionID]
        current = out.in_place()
        out.close()
        if not current:
            log.warning("%s; that file is no longer this master's snapshot", exc)
            self._sending.pop(transmissionID, None)
            return
        self._restart_transmissions()   # the others send the same file
        self._sending.clear()
        try:
            if self._damaged is None:
                raise OSError("nothing to move it aside")
            self._damaged(exc)
        except OSError as err:          # it stays, and the next transmission finds it again
            log.error("SNAPSHOT DAMAGED: %s; not moved aside: %s", exc, err)

    def setTransmissionData(self, data) -> bool:
        """A piece of the leader's snapshot: into pysyncobj's incoming file, made durable as it
        grows (PeriodicSync) and at the end (pysyncobj never fsyncs it, and it is the snapshot
        this master sends once it leads), and to the receiver."""
        if data is None:
            return False
        piece, first, last = data
        if self._receiver is not None:
            self._receiver(piece, first, last)
        if first:
            self._incoming_sync = PeriodicSync()
        complete = super().setTransmissionData(data)
        incoming = self._Serializer__incomingTransmissionFile
        try:
            if incoming is not None:
                self._incoming_sync.wrote(incoming, len(piece))
            if complete:
                self._incoming_sync.settle()    # a failed sync on the way fails the transfer
                fsync_path(self._path)  # its directory entry: the install fsyncs the directory
        except OSError as exc:          # as pysyncobj does with a failed write: drop the transfer
            log.error("receiving the leader's snapshot failed: %s", exc)
            if incoming is not None:
                incoming.close()
            self._Serializer__incomingTransmissionFile = None
            return False
        return complete

    def cancelTransmisstion(self, id) -> None:      # pysyncobj's spelling
        out = self._outgoing.pop(id, None)
        if out is not None:
            out.close()
        self._sending.pop(id, None)

    def wait(self, timeout: float | None = None) -> None:
        """Let a snapshot being written finish (before the store closes)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _restart_transmissions(self) -> None:
        """Followers being sent the previous file start over with the new one (as pysyncobj
        does when a dump completes)."""
        for out in self._outgoing.values():
            out.close()
        self._outgoing.clear()
