"""A master's Raft node (master/raft.py, in this process, a group of one) and damaged snapshot
files: an install refuses an image that is not the one its header describes, on both install
paths, and keeps the old store; a master moves its own damaged snapshot aside at start,
recovers its whole state from LMDB and the journal, and writes a fresh snapshot."""
from __future__ import annotations

import glob
import logging
import os
import shutil
import struct
import time
from concurrent.futures import Future

import pytest

from cli.localcluster import free_port
from gfs.errors import DataLoss, NotFound
from master.raft import MetadataRaft, RaftConfig
from master.state import MetadataState

PIECE = 1 << 20


def config(compact_entries: int = 10) -> RaftConfig:
    return RaftConfig(election_min=0.2, election_max=0.3, heartbeat=0.02,
                      compact_entries=compact_entries, tick=0.01)


def mkdir(path: str) -> dict:
    return {"op": "mkdir", "path": path, "parents": False, "mode": 0o755, "owner": "", "now": 1}


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


class Master:
    """One master's Raft node over a data directory, opened and closed at will."""

    def __init__(self, data_dir, address: str | None = None):
        self.data_dir = str(data_dir)
        self.address = address or f"127.0.0.1:{free_port()}"
        self.raft: MetadataRaft | None = None

    @property
    def snapshot(self) -> str:
        return os.path.join(self.data_dir, "raft", "snapshot.bin")

    def open(self, compact_entries: int = 10, start: bool = True) -> MetadataRaft:
        self.raft = MetadataRaft(self.address, {self.address: "127.0.0.1:1"}, self.data_dir,
                                 config(compact_entries), cluster_secret=b"k" * 32)
        if start:
            self.raft.start()
            wait_for(self.raft.is_leader, what="leadership")
        return self.raft

    def close(self) -> None:
        if self.raft is not None:
            self.raft.stop()
            self.raft = None

    def run(self, command: dict) -> dict:
        done: Future = Future()
        self.raft.propose([command], lambda result, err: done.set_result((result, err)))
        result, err = done.result(10)
        assert err == 0 and "ok" in result[0], (result, err)
        return result[0]

    def paths(self, names) -> list[str]:
        """Those of `names` that are not directories in this node's store."""
        missing = []
        for name in names:
            try:
                self.raft.state.stat(name)
            except NotFound:
                missing.append(name)
        return missing


@pytest.fixture
def masters(tmp_path):
    made: list[Master] = []

    def make(name: str) -> Master:
        made.append(Master(tmp_path / name))
        return made[-1]
    yield make
    for m in made:
        m.close()


DIRS = [f"/snap-dir-{i:02d}" for i in range(40)]


def master_with_a_snapshot(make, name: str, dirs=DIRS) -> Master:
    """A master (closed) that made `dirs` and then a snapshot of all of it, by compaction."""
    m = make(name)
    m.open()
    for d in dirs:
        m.run(mkdir(d))
    last = m.raft.status()["applied_index"]
    m.raft.forceLogCompaction()
    wait_for(lambda: m.raft.snapshot_index == last, what="a snapshot of every entry")
    m.close()
    return m


def snapshot_of(make) -> tuple[bytes, int]:
    """A snapshot file written by a master's own compaction, and the index it is at."""
    src = master_with_a_snapshot(make, "src")
    data = open(src.snapshot, "rb").read()
    src.open(start=False)
    index = src.raft.snapshot_index
    src.close()
    return data, index


def flip_in_a_name(data: bytes) -> bytes:
    """A bit flipped inside a directory name of the store image ("...-17" becomes "...-16"):
    LMDB's own checks cannot tell, and an install that takes it silently corrupts the
    namespace."""
    at = data.index(b"snap-dir-17") + len(b"snap-dir-17") - 1
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def receive(raft: MetadataRaft, data: bytes) -> None:
    """Give the node's receiver the file in pieces, as pysyncobj does (the last one empty)."""
    for at in range(0, len(data), PIECE):
        raft._receiver.piece(data[at:at + PIECE], at == 0, False)
    raft._receiver.piece(b"", False, True)


def follower_with_a_store(make) -> Master:
    dst = make("dst")
    with MetadataState(os.path.join(dst.data_dir, "meta")) as state:
        state.apply_batch(1, [mkdir("/keep")])
    dst.open(start=False)
    return dst


@pytest.mark.parametrize("in_place", [True, False], ids=["received-in-place", "copied"])
@pytest.mark.parametrize("damage", ["flipped-bit", "old-format-cut-off"])
def test_an_install_refuses_a_damaged_image_and_keeps_the_old_store(masters, in_place, damage):
    data, _ = snapshot_of(masters)
    if damage == "flipped-bit":
        damaged, error = flip_in_a_name(data), "checksum"
    else:                             # no checksum to tell: only the size against the meta page
        old = to_old_format(data)
        damaged, error = old[:len(old) * 2 // 3], "not a whole metadata store"
    dst = follower_with_a_store(masters)
    with open(dst.snapshot, "wb") as f:          # where pysyncobj leaves the received file
        f.write(damaged)
    if in_place:
        receive(dst.raft, damaged)
    with pytest.raises(DataLoss, match=error):
        dst.raft._install_snapshot(dst.snapshot)
    assert dst.raft.state.applied_index() == 1
    assert dst.paths(["/keep"]) == [] and dst.paths(DIRS) == DIRS
    assert not os.path.exists(os.path.join(dst.data_dir, "meta.installing"))
    # the bad file is not kept as this master's snapshot (it would send it on as leader)
    assert not os.path.exists(dst.snapshot)
    [aside] = glob.glob(dst.snapshot + ".bad-*")
    assert open(aside, "rb").read() == damaged


@pytest.mark.parametrize("in_place", [True, False], ids=["received-in-place", "copied"])
@pytest.mark.parametrize("old_format", [False, True], ids=["checksummed", "old-format"])
def test_an_install_takes_a_whole_snapshot(masters, in_place, old_format, caplog):
    from master.snapshot_format import read_header
    data, index = snapshot_of(masters)
    if old_format:
        data = to_old_format(data)
    dst = follower_with_a_store(masters)
    with open(dst.snapshot, "wb") as f:
        f.write(data)
    if in_place:
        receive(dst.raft, data)
    assert (read_header(dst.snapshot).image is None) == old_format
    with caplog.at_level(logging.INFO):
        dst.raft._install_snapshot(dst.snapshot)
    assert dst.raft.state.applied_index() == index
    assert dst.paths(DIRS) == [] and dst.paths(["/keep"]) == ["/keep"]
    assert ("not received in place" in caplog.text) != in_place
    assert ("old format" in caplog.text) == old_format
    assert os.path.exists(dst.snapshot)


def to_old_format(data: bytes) -> bytes:
    """The same snapshot written as masters before the image checksum wrote it."""
    from master.snapshot_format import MAGIC, MAGIC_V1
    assert data.startswith(MAGIC)
    (length,) = struct.unpack_from("<Q", data, 8)
    return MAGIC_V1 + struct.pack("<Q", length) + data[40:]


def check_fresh_snapshot(m: Master) -> None:
    """A new snapshot file was written, and it is whole."""
    from master.snapshot_format import check_file
    # the file is renamed into place (and its directory fsync'd) before the index is recorded
    wait_for(lambda: os.path.exists(m.snapshot) and m.raft.snapshot_index > 0,
             what="a fresh snapshot, recorded")
    assert check_file(m.snapshot).last_entry[1] == m.raft.snapshot_index > 0


def test_a_cut_off_snapshot_is_moved_aside_at_start_and_the_state_kept(masters, caplog):
    m = master_with_a_snapshot(masters, "m")
    data = open(m.snapshot, "rb").read()
    cut = data[:len(data) * 2 // 3]                 # a rename before the data reached the disk
    with open(m.snapshot, "wb") as f:
        f.write(cut)
    with caplog.at_level(logging.INFO):
        m.open()
    [aside] = glob.glob(m.snapshot + ".bad-*")      # moved aside, never deleted
    assert open(aside, "rb").read() == cut
    assert "SNAPSHOT DAMAGED" in caplog.text
    assert m.paths(DIRS) == []
    check_fresh_snapshot(m)
    m.run(mkdir("/after"))
    m.close()
    m.open()
    assert m.paths(DIRS + ["/after"]) == []


def test_a_damaged_snapshot_with_the_store_behind_the_journal(masters, caplog):
    """LMDB lost its last commits in a crash (it commits without syncing its meta page) and the
    snapshot is damaged: the journal brings the store back, and a compaction — asked for since
    nothing could be written at start — writes a fresh snapshot."""
    m = master_with_a_snapshot(masters, "m")
    meta = os.path.join(m.data_dir, "meta")
    shutil.copytree(meta, meta + ".before")
    m.open(compact_entries=1000)
    later = [f"/later-{i}" for i in range(5)]
    for d in later:
        m.run(mkdir(d))
    last = m.raft.status()["applied_index"]
    m.close()
    shutil.rmtree(meta)
    os.rename(meta + ".before", meta)               # the store is behind the journal now
    with open(m.snapshot, "rb") as f:
        damaged = flip_in_a_name(f.read())
    with open(m.snapshot, "wb") as f:
        f.write(damaged)
    with caplog.at_level(logging.INFO):
        m.open(compact_entries=1000, start=False)
        assert m.raft.state.applied_index() < last
        assert glob.glob(m.snapshot + ".bad-*") and not os.path.exists(m.snapshot)
        m.raft.start()
        wait_for(m.raft.is_leader, what="leadership")
        wait_for(lambda: m.raft.state.applied_index() >= last, what="the journal replayed")
        check_fresh_snapshot(m)
    assert "SNAPSHOT DAMAGED" in caplog.text and "checksum" in caplog.text
    assert m.paths(DIRS + later) == []
    m.close()
    m.open()
    assert m.paths(DIRS + later) == []


def test_an_old_format_snapshot_is_kept_at_start_and_said_so(masters, caplog):
    m = master_with_a_snapshot(masters, "m", DIRS[:20])
    old = to_old_format(open(m.snapshot, "rb").read())
    with open(m.snapshot, "wb") as f:
        f.write(old)
    with caplog.at_level(logging.INFO):
        m.open(start=False)
    assert open(m.snapshot, "rb").read() == old and not glob.glob(m.snapshot + ".bad-*")
    assert "old format" in caplog.text


def test_a_snapshot_damaged_while_the_master_runs_is_not_sent_whole_and_is_replaced(masters,
                                                                                     caplog):
    """Bit rot in the running leader's own file: the send stops before the last piece (on which
    a follower would install it — and refuse it), the file is moved aside, compaction is no
    longer held back, and a fresh snapshot is written although no entry was applied since the
    last one (pysyncobj would skip such a compaction)."""
    from master.snapshot_format import read_header
    m = masters("m")
    m.open(compact_entries=1000)
    for d in DIRS:
        m.run(mkdir(d))
    last = m.raft.status()["applied_index"]
    m.raft.forceLogCompaction()                  # a snapshot of this run, at the last entry
    wait_for(lambda: m.raft.snapshot_index == last, what="a snapshot of every entry")
    with open(m.snapshot, "rb") as f:
        data = f.read()
    at = read_header(m.snapshot).offset + (len(data) - read_header(m.snapshot).offset) // 2
    with open(m.snapshot, "r+b") as f:          # in place: same file, same length
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    sender = m.raft._snapshots                   # what pysyncobj asks for a follower's pieces
    with caplog.at_level(logging.INFO):
        sent = b""
        while (piece := sender.getTransmissionData("follower")) is not None:
            assert not piece[2], "the damaged snapshot went out whole"
            sent += piece[0]
        assert len(sent) == len(data)
        [aside] = glob.glob(m.snapshot + ".bad-*")
        assert open(aside, "rb").read()[at] == data[at] ^ 0xFF
        assert not sender.sending()
        check_fresh_snapshot(m)
    assert "SNAPSHOT DAMAGED" in caplog.text and "checksum" in caplog.text
    assert m.raft.snapshot_index == last
    sent = b""
    while not (piece := sender.getTransmissionData("follower"))[2]:
        sent += piece[0]
    assert sent == open(m.snapshot, "rb").read()
    assert m.paths(DIRS) == []
