"""Disaster recovery: a metadata backup (gfs/backupfile.py) made into a new master's data
directory (docs/disaster-recovery.md).

A restored store starts a new Raft log (its applied index is reset to 0: the new group's first
entry is 1); it keeps every chunk handle, version and counter, so the chunks the chunkservers hold
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
from master.state import MetadataState


def restore(path: str, data_dir: str, force: bool = False) -> dict:
    """Make `data_dir` a master data directory holding the backup's metadata and an empty Raft
    journal (a new group starts from it). Refuses a directory that already holds a master's
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
        state.start_new_log()
    if os.path.exists(raft):
        shutil.rmtree(raft)
    makedirs_durable(raft)
    fsync_path(data_dir)
    return header
