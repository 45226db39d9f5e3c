"""Disaster recovery: a metadata backup (gfs/backupfile.py) made into a new master's data
directory (docs/disaster-recovery.md).

A restored store starts a new Raft log. That log does not begin at entry 1: its first two
entries (no-ops at RESTORED_LOG_BASE - 1 and RESTORED_LOG_BASE) stand for the restore, and the
store is the state at RESTORED_LOG_BASE. A log that began at 1 would tell a master that joins later
with an empty disk — before the group's first log compaction — to replay the log from 1 onto an
empty store, and it would silently lack every restored file. A log that starts later makes the
leader send such a master a snapshot instead (written at the master's first start, when it knows
the group: MetadataRaft._snapshot_a_restored_log).

The store keeps every chunk handle, version and counter, so the chunks the chunkservers hold
match it again, and moves the chunk-handle counter far ahead (MetadataState.start_new_log), so new
handles never collide with old ones, nor with those of chunks written after the backup.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from gfs.backupfile import verify_and_extract
from gfs.errors import AlreadyExists
from gfs.fsutil import fsync_path, makedirs_durable
from master.journal import DurableJournal
from master.state import MetadataState

# The restored store is the state at this log index; a master with an empty log asks for entry 2
# on, which the restored group's log does not hold: it is sent a snapshot (module docstring).
RESTORED_LOG_BASE = 3
NO_OP = b"\x01"              # pysyncobj's no-op command (_COMMAND_TYPE.NO_OP)


def restore(path: str, data_dir: str, force: bool = False) -> dict:
    """Make `data_dir` a master data directory holding the backup's metadata and the start of a
    new Raft log (a new group starts from it). Refuses a directory that already holds a master's
    state unless `force` (which replaces it). Returns the backup's header."""
    meta, raft = os.path.join(data_dir, "meta"), os.path.join(data_dir, "raft")
    existing = [d for d in (meta, raft) if os.path.exists(d) and os.listdir(d)]
    if existing and not force:
        raise AlreadyExists(f"{data_dir} already holds a master's state ({', '.join(existing)});"
                            " restore into an empty directory, or give --force to replace it")
    makedirs_durable(data_dir)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".restore-") as tmp:
        mdb = os.path.join(tmp, "data.mdb")
        header = verify_and_extract(path, mdb)
        MetadataState.install_copy(mdb, meta)
    with MetadataState(meta) as state:
        state.start_new_log(RESTORED_LOG_BASE)
    if os.path.exists(raft):
        shutil.rmtree(raft)
    journal = DurableJournal(raft)          # makes the directory durable
    try:
        for index in (RESTORED_LOG_BASE - 1, RESTORED_LOG_BASE):
            journal.add(NO_OP, index, 0)
        journal.sync()
    finally:
        journal.close()
    fsync_path(data_dir)
    return header
