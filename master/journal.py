"""A durable Raft journal for pysyncobj, with group commit.

pysyncobj's own FileJournal writes through an mmap and never fsyncs, so an entry a follower
acknowledged can vanish in a crash. This journal implements pysyncobj's `Journal` interface
and separates *appending* from *making durable*:

* `add`, `deleteEntriesFrom`, `clear` and `deleteEntriesTo` only change the in-memory list and
  queue the file change;
* `sync()` writes everything queued with one write and one fdatasync (group commit).

The Raft node (master/raft.py) calls `sync()` before any message that claims durability
leaves the process (append acknowledgements) and before the leader counts its own log in a
commit decision, so one fsync covers every entry that arrived since the last one.

File format (`journal.log`): a sequence of records
``<payload_len:u32><crc32:u32><index:u64><term:u64><payload>`` (little endian); the CRC
covers index, term and payload. A torn record at the tail (a crash mid-write of data that was
never acknowledged) is cut off at open; a damaged record followed by more data is preserved
aside as ``journal.log.damaged-<offset>`` before the cut, so nothing is silently thrown away.

Term and vote live in ``journal.meta`` (msgpack), replaced atomically and fsync'd before
`setCurrentTerm` returns, because Raft forbids answering a vote before they are durable.

An optional `listener` (master/membership.py's MembershipLog) hears of every entry appended,
cut or compacted away, so the group's membership can be derived from the log.
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import zlib

import msgpack
from pysyncobj.journal import Journal

from gfs.fsutil import fsync_path, makedirs_durable

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQQ")
_IDX_TERM = struct.Struct("<QQ")


def write_file_atomically(path: str, data: bytes) -> None:
    """Replace `path` with `data`: write a temp file, fsync it, rename, fsync the directory."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    """One journal record: header, then the command bytes."""
    head = _IDX_TERM.pack(idx, term)
    crc = zlib.crc32(command, zlib.crc32(head))
    return _HEADER.pack(len(command), crc, idx, term) + command


def read_records(path: str) -> tuple[list[tuple[bytes, int, int]], list[int], int, int]:
    """Parse a journal file: (entries, record offsets, end of the valid prefix, file size)."""
    entries: list[tuple[bytes, int, int]] = []
    offsets: list[int] = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc, idx, term = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data):
            break
        command = bytes(data[pos + _HEADER.size:end])
        if zlib.crc32(command, zlib.crc32(_IDX_TERM.pack(idx, term))) != crc:
            break
        if entries and idx != entries[-1][1] + 1:
            break
        entries.append((command, idx, term))
        offsets.append(pos)
        pos = end
    return entries, offsets, pos, len(data)


class DurableJournal(Journal):
    """pysyncobj Journal backed by an fsync'd append-only file (see the module docstring)."""

    def __init__(self, directory: str, listener=None):
        makedirs_durable(directory)
        self._dir = directory
        self._path = os.path.join(directory, "journal.log")
        self._meta_path = os.path.join(directory, "journal.meta")
        self._lock = threading.Lock()
        if not os.path.exists(self._path):
            open(self._path, "wb").close()
            fsync_path(directory)
        entries, offsets, valid_end, size = read_records(self._path)
        if valid_end < size:
            self._preserve_damaged_tail(valid_end, size)
        self._entries = entries
        self._offsets = offsets
        self._listener = listener
        if listener is not None:
            for command, idx, _ in entries:
                listener.appended(command, idx)
        self._end = valid_end           # byte size of the records in self._entries
        self._fd = os.open(self._path, os.O_RDWR)
        if valid_end < size:
            os.ftruncate(self._fd, valid_end)
            os.fsync(self._fd)
        self._queued: list[bytes] = []  # encoded records not yet written
        self._written_end = valid_end    # bytes actually written to the file
        self._rewrite_needed = False
        self._dirty = False
        self._replay_pos: int | None = None    # see deleteEntriesFrom
        self._meta = self._load_meta()
        self._meta_dirty = False
        self.fsyncs = 0
        # Fault injection for the chaos suite's power-loss simulation: remember (in page cache
        # only) how much of the file is known durable, so a test can throw away the rest.
        self._synced_trace = (os.path.join(directory, "journal.synced")
                              if os.environ.get("GFS_TRACE_SYNCED") == "1" else None)

    # --- pysyncobj Journal interface ---------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        with self._lock:
            if self._replay_pos is not None:
                if self._entries[self._replay_pos][1] != idx:
                    # A deferred cut left over from an earlier message: pysyncobj calls
                    # deleteEntriesFrom only when entries follow the leader's prevLogIdx, so
                    # this entry follows the *last* one, whose term the leader just matched —
                    # by Raft's log matching the whole log is confirmed, nothing conflicts.
                    self._replay_pos = None
                elif self._matches_replayed(idx, term):
                    return
                else:
                    self._truncate_locked(self._replay_pos)
            if self._entries and idx != self._entries[-1][1] + 1:
                # Never write a log with a hole: pysyncobj finds entries by position.
                raise RuntimeError(f"journal: entry {idx} does not follow the last entry "
                                   f"{self._entries[-1][1]}; refusing to append it")
            record = encode_record(command, idx, term)
            self._entries.append((command, idx, term))
            if self._listener is not None:
                self._listener.appended(command, idx)
            self._offsets.append(self._end)
            self._end += len(record)
            self._queued.append(record)
            self._dirty = True

    def clear(self) -> None:
        with self._lock:
            self._replay_pos = None
            if self._listener is not None:
                self._listener.truncated_from(0)
            self._entries = []
            self._offsets = []
            self._end = 0
            self._queued = []
            self._rewrite_needed = True
            self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """pysyncobj calls this before appending a leader's entries whenever the follower already
        has entries past the leader's prevLogIdx — also when those entries are the very same
        (a resend after the leader's nextIndex moved back), which would cut entries this node
        has already acknowledged. Raft only removes entries that *conflict*, so the cut is
        deferred: the following `add`s are compared with what is there, and the log is truncated
        only at the first entry whose term differs."""
        with self._lock:
            self._replay_pos = entryFrom if entryFrom < len(self._entries) else None

    def _matches_replayed(self, idx: int, term: int) -> bool:
        """While replaying after deleteEntriesFrom: is the next stored entry this one?"""
        pos = self._replay_pos
        if pos < len(self._entries) and self._entries[pos][1:] == (idx, term):
            self._replay_pos = pos + 1 if pos + 1 < len(self._entries) else None
            return True
        return False

    def leader_matched(self, prev_idx: int, prev_term: int) -> None:
        """The leader's append names (prev_idx, prev_term) and that is this log's last entry: by
        Raft's log matching the whole log agrees with the leader's, so a deferred cut left over
        from an earlier message is over (it would otherwise hold the commit index back)."""
        with self._lock:
            if self._replay_pos is not None and self._entries \
                    and self._entries[-1][1:] == (prev_idx, prev_term):
                self._replay_pos = None

    def unverified_index(self) -> int | None:
        """Log index of the first entry kept by a deferred cut but not yet confirmed by the
        leader, or None. Such entries must not be committed on this node's word: pysyncobj
        clamps the commit index to the *last* log index, where Raft says the last *new* one."""
        pos = self._replay_pos
        return self._entries[pos][1] if pos is not None and pos < len(self._entries) else None

    def confirm_all(self) -> None:
        """This node became leader: its whole log is authoritative."""
        with self._lock:
            self._replay_pos = None

    def _truncate_locked(self, entryFrom: int) -> None:
        """Really drop the entries from list position `entryFrom` on (a conflicting tail)."""
        self._replay_pos = None
        if entryFrom < len(self._entries):
            log.info("journal: dropping %d conflicting entries from index %d",
                     len(self._entries) - entryFrom, self._entries[entryFrom][1])
            new_end = self._offsets[entryFrom]
            if self._listener is not None:
                self._listener.truncated_from(self._entries[entryFrom][1])
            del self._entries[entryFrom:]
            del self._offsets[entryFrom:]
            self._end = new_end
            if not self._rewrite_needed:
                try:
                    self._write_queued()
                    os.ftruncate(self._fd, new_end)
                    self._written_end = new_end
                except OSError as err:          # the next sync rewrites the file from memory
                    log.error("journal: cutting the tail failed (%s); the file will be rewritten",
                              err)
                    self._rewrite_needed = True
            self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries before list position `entryTo` (log compaction after a snapshot)."""
        with self._lock:
            self._replay_pos = None
            if entryTo <= 0:
                return
            if self._listener is not None:      # durable before the entries leave
                self._listener.compacting_to(self._entries[entryTo][1] if entryTo < len(
                    self._entries) else self.last_index + 1)
            del self._entries[:entryTo]
            self._rewrite_needed = True
            self._dirty = True
        # Compaction only follows a durable snapshot and LMDB is always ahead of it; rewrite now
        # so the file does not keep growing.
        self.sync()

    def __getitem__(self, item):
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Write what is queued and close the file (pysyncobj calls it `_destroy`)."""
        self._destroy()

    def _destroy(self) -> None:
        self.sync()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remember the commit index for the next start — never past an entry a deferred cut
        kept but the leader has not confirmed (`unverified_index`). pysyncobj passes its
        follower's commit index before MetadataRaft caps it, and a restart applies every entry
        up to the remembered index before any leader is heard from: an unconfirmed entry from
        a deposed leader's tail would go into the metadata store, and the committed entry that
        later replaces it in the log would never be applied."""
        unverified = self.unverified_index()
        if unverified is not None:
            raftCommitIndex = min(raftCommitIndex, unverified - 1)
        if self._meta.get("commit") != raftCommitIndex:
            self._meta["commit"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._meta.get("commit", 1)

    def setCurrentTerm(self, term: int, votedForNodeId) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._meta.get("term", 0)

    def getVotedForNodeId(self):
        return self._meta.get("voted_for")

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta()

    # --- durability --------------------------------------------------------------------------

    def sync(self) -> bool:
        """Make every change so far durable with one fdatasync. Returns True if it wrote."""
        with self._lock:
            if not self._dirty:
                return False
            try:
                if self._rewrite_needed:
                    self._rewrite()
                else:
                    self._write_queued()
                    os.fdatasync(self._fd)
            except OSError:
                # A failed write or fdatasync (EIO, ENOSPC) leaves the file in an unknown state:
                # the queued bytes may be half written, and after a failed fdatasync Linux may
                # drop the dirty pages and let a retry "succeed" without them. So nothing is
                # acknowledged (the caller releases acks only after a successful sync), and the
                # next sync rewrites the whole file from the entries in memory.
                self._rewrite_needed = True
                raise
            self._rewrite_needed = False
            self._dirty = False
            self.fsyncs += 1
            if self._synced_trace:
                with open(self._synced_trace, "w") as f:
                    f.write(str(self._written_end))
            return True

    @property
    def size_bytes(self) -> int:
        return self._end

    @property
    def first_index(self) -> int:
        return self._entries[0][1] if self._entries else 0

    @property
    def last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    def _write_queued(self) -> None:
        if not self._queued:
            return
        data = b"".join(self._queued)
        self._queued = []
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], self._written_end + written)
        self._written_end += len(data)

    def _rewrite(self) -> None:
        """Write the whole current list to a new file and swap it in atomically."""
        tmp = self._path + ".rewrite"
        offsets, pos, parts = [], 0, []
        for command, idx, term in self._entries:
            rec = encode_record(command, idx, term)
            offsets.append(pos)
            pos += len(rec)
            parts.append(rec)
        with open(tmp, "wb") as f:
            f.write(b"".join(parts))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        fsync_path(self._dir)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR)
        self._offsets = offsets
        self._end = self._written_end = pos
        self._queued = []
        self._rewrite_needed = False

    def _load_meta(self) -> dict:
        try:
            with open(self._meta_path, "rb") as f:
                return msgpack.unpackb(f.read())
        except FileNotFoundError:
            return {}

    def _store_meta(self) -> None:
        write_file_atomically(self._meta_path, msgpack.packb(self._meta))
        self._meta_dirty = False

    def _preserve_damaged_tail(self, valid_end: int, size: int) -> None:
        """Keep a copy of bytes past the valid prefix if they look like more than a torn write."""
        if size - valid_end > _HEADER.size * 4:
            aside = f"{self._path}.damaged-{valid_end}"
            shutil.copyfile(self._path, aside)
            log.error("journal %s: damaged record at byte %d of %d; copy kept at %s",
                      self._path, valid_end, size, aside)
        else:
            log.warning("journal %s: cutting a torn tail of %d bytes", self._path, size - valid_end)
