"""The snapshot side of the masters' Raft node (master/raft.py; docs/raft.md "Snapshots"):
writing one (master/snapshot_writer.py runs it off the tick thread), installing one from the
leader (master/snapshot_receiver.py wrote its image into place as it arrived), and checking this
master's own file at start, or moving it aside when it was found damaged as it was sent
(master/snapshot_sender.py; master/snapshot_format.py has the format and its checks).

A mixin of MetadataRaft: it uses the node's store, journal, membership and locks."""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

import pysyncobj.pickle as sopickle
from pysyncobj.transport import TCPNode

from gfs.clock import now_ms
from gfs.errors import DataLoss
from gfs.fsutil import fsync_path
from master import snapshot_format
from master.raft_private import PrivateRaftState as _PrivateRaftState
from master.state import MetadataState

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_S = 5.0             # between compactions asked for to replace a damaged snapshot


class RaftSnapshots:
    """MetadataRaft's snapshot methods (the node sets the attributes they use)."""

    def _check_own_snapshot(self) -> None:
        """At start: check this master's snapshot file whole (master/snapshot_format.py
        check_file) — one cut off by a power loss under older code, or damaged since, would
        otherwise be sent to every follower that needs a snapshot, and refused by each for as
        long as it is sent (which holds compaction back: for ever). A bad one is moved aside."""
        if not os.path.exists(self._snapshot_path):
            return
        started = time.monotonic()
        try:
            header = snapshot_format.check_file(self._snapshot_path)
        except (ValueError, DataLoss, OSError) as exc:
            self._discard_snapshot(exc)
            return
        if header.image is None:
            log.warning("this master's snapshot %s is in the old format (GFSSNAP1, no checksum "
                        "of its store image; its size matches its meta page); the next "
                        "compaction replaces it", self._snapshot_path)
        log.info("snapshot at index %d checked in %.2f s", header.last_entry[1],
                 time.monotonic() - started)

    def _discard_snapshot(self, reason: BaseException, durable: bool = True) -> None:
        """Move this master's damaged snapshot file aside (never deleted: kept for a look) and
        compact at the next chance, so that a fresh one replaces it. Until then there is no
        snapshot to send a follower that needs one (pysyncobj retries every heartbeat); the
        state itself is in LMDB and the journal, which never needed it. `durable=False` skips
        the directory fsync (in the tick thread: if the rename is lost in a crash, the check at
        start finds the file again)."""
        aside = f"{self._snapshot_path}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{now_ms() % 1000:03d}"
        os.rename(self._snapshot_path, aside)
        if durable:
            fsync_path(self._raft_dir)
        self.snapshot_index = 0
        self._snapshot_retry = time.monotonic()
        log.error("SNAPSHOT DAMAGED: %s (%s); moved aside to %s, a new one is written at the "
                  "next compaction", self._snapshot_path, reason, aside)

    def _replace_missing_snapshot(self) -> None:
        """Tick thread: while this master has no snapshot since it moved a damaged one aside,
        ask pysyncobj for a compaction every SNAPSHOT_RETRY_S (one asked for while another
        is written or sent does not happen, nor one whose copy failed). pysyncobj's record of
        the last snapshot written is cleared again each time: a compaction that finished just as
        the file was moved aside records its entry after the move, and would make pysyncobj
        skip every compaction asked for until a new entry is applied."""
        if self._snapshot_retry is not None and time.monotonic() >= self._snapshot_retry:
            self._snapshot_retry = time.monotonic() + SNAPSHOT_RETRY_S
            _PrivateRaftState.forget_last_snapshot(self)
            self.forceLogCompaction()

    def _snapshot_a_restored_log(self) -> None:
        """A log that starts after entry 1 with no snapshot beside it is a restored group's
        (master/backup.py), or one whose snapshot was damaged and moved aside
        (_check_own_snapshot): write the snapshot of the store at the log's last entry now, so
        the leader has one to send a master that joins with an empty disk (it would otherwise be
        sent nothing it can use, and wait)."""
        if os.path.exists(self._snapshot_path) or self.journal.first_index <= 1 \
                or len(self.journal) < 2 or self.state.applied_index() != self.journal.last_index:
            return
        tmp = self._snapshot_path + ".tmp"
        self._begin_snapshot(tmp, (self.journal[-1], self.journal[-2], None))()
        os.replace(tmp, self._snapshot_path)
        fsync_path(self._raft_dir)
        self._snapshot_written(self.journal.last_index)

    def _begin_snapshot(self, tmp_path: str, entries) -> Callable[[], None]:
        """Snapshot of (last applied entry, the one before, cluster) + LMDB copy. Called in the
        tick thread, where the store is exactly the state at the last applied entry: pins that
        state and returns the function that writes it to `tmp_path` from any thread
        (master/snapshot_writer.py), while applies go on."""
        last_entry, prev_entry, _ = entries
        members = self.members.at(last_entry[1])      # the group as of the snapshot's entry
        cluster = {TCPNode(a) for a in members}
        header = sopickle.dumps((last_entry, prev_entry, cluster, members))
        self._commit_applied(force=True)     # the store exactly at the last applied entry
        state = self.state
        pinned = state.pin()

        def write() -> None:
            try:
                with self._copy_lock:            # an install waits before closing the store
                    # The journal up to here goes once the snapshot is in place: LMDB must not
                    # be able to lose a commit it holds (it commits without syncing its meta
                    # page: master/state.py).
                    state.sync_now()
                    snapshot_format.write(tmp_path, header, pinned.copy_to_fd)
            finally:
                pinned.close()
        return write

    def _snapshot_damaged_while_sent(self, reason: BaseException) -> None:
        """Tick thread: the file being sent to a follower turned out damaged, cut off or
        unreadable (master/snapshot_sender.py): moved aside, a new one written soon."""
        self._discard_snapshot(reason, durable=False)

    def _snapshot_send_backlog(self, node) -> int:
        return _PrivateRaftState.send_backlog(self._transport, node)

    def _snapshot_written(self, index: int) -> None:
        self.snapshot_index = index
        self._snapshot_retry = None
        self.snapshot_time_ms = now_ms()
        log.info("snapshot written at index %d", index)

    def _install_snapshot(self, path: str):
        """pysyncobj deserializer hook, called when the leader sent us a snapshot: replace LMDB
        with the snapshot's copy and return the entries pysyncobj restarts its log from."""
        started = time.monotonic()
        try:
            header = snapshot_format.read_header(path)
        except ValueError as exc:
            self._discard_snapshot(exc)
            raise DataLoss(f"snapshot from the leader refused: {exc}") from None
        last_entry, prev_entry, members = header.last_entry, header.prev_entry, header.members
        with open(path, "rb") as src:
            # The store image was written into place (and hashed) while the pieces arrived
            # (master/snapshot_receiver.py); else it is copied (and hashed) from the file here.
            image = self._receiver.take_ready(src.read(header.offset))
            if image is None:
                log.info("snapshot image not received in place: copying it from %s", path)
                image = snapshot_format.copy_image(
                    src, MetadataState.install_target(self._state_dir))
        try:
            snapshot_format.check_image(header, image, f"snapshot from the leader ({path})")
        except DataLoss as exc:            # the old store stays, and the file is not kept
            MetadataState.install_abandon(self._state_dir)
            self._discard_snapshot(exc)
            raise
        self._snapshots.superseded()       # one of our own being written is older: dropped
        self._commit_applied(force=True)     # nothing left open in the store being replaced
        with self._state_lock.exclusive(), self._copy_lock:
            self.state.close()
            try:
                MetadataState.install_written(self._state_dir)
            except DataLoss as exc:        # not a whole store (master/state.py _check_env)
                self._discard_snapshot(exc)
                raise
            finally:                       # the new store, or the old one if that failed
                self.state = MetadataState(self._state_dir)
            self.state.apply_batch(last_entry[1], [])
        self.commits.committed(self.state.committed_index)
        fsync_path(self._raft_dir)
        self.members.reset(last_entry[1], members)     # before pysyncobj clears the journal
        self.snapshot_index = last_entry[1]
        self._snapshot_retry = None        # the leader's file is ours now
        log.info("installed snapshot from leader at index %d in %.2f s", last_entry[1],
                 time.monotonic() - started)
        # The leader reached us with the last piece just before this install, which held the
        # tick thread (briefly when the image was received in place, for a whole copy of the
        # store when not): without a fresh election deadline this follower could campaign at
        # its next tick and depose a leader that is alive, restarting every transfer in progress.
        _PrivateRaftState.postpone_election(self, self._config.election_max)
        return last_entry, prev_entry, {TCPNode(a) for a in members}

    def copy_state(self, fd: int) -> int:
        """A consistent, compacted copy of the metadata to `fd`, for a backup; returns the log
        index it is the state at (read in the read transaction the copy is made from: commits
        go on meanwhile). Only a snapshot install (which swaps the store) waits for it."""
        with self._copy_lock:
            pinned = self.state.pin()
            try:
                applied = pinned.applied_index()
                pinned.copy_to_fd(fd)
            finally:
                pinned.close()
        return applied

    def _read_snapshot_info(self) -> None:
        try:
            last_entry = snapshot_format.read_header(self._snapshot_path).last_entry
            self.snapshot_index = last_entry[1]
            self.snapshot_time_ms = int(os.path.getmtime(self._snapshot_path) * 1000)
        except (FileNotFoundError, ValueError):
            pass
