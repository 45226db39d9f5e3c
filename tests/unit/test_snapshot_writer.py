"""master/snapshot_writer.py: the snapshot is written by a thread; the tick thread only polls."""
import os
import threading

import pytest
from pysyncobj.config import SERIALIZER_STATE

from gfs.errors import NotFound
from master.snapshot_writer import BackgroundSerializer
from master.state import MetadataState
from tests.unit.snapshot_files import header_of, snapshot_file

LAST, PREV = (b"\x01", 8, 2), (b"\x01", 7, 2)


def snap(image: bytes) -> bytes:
    """A whole snapshot file of `image` (only whole files are sent)."""
    return snapshot_file(header_of(), image)


def make(tmp_path, write_body, written):
    path = str(tmp_path / "snapshot.bin")

    def begin(tmp, entries):
        assert entries[0] == LAST and entries[1] == PREV
        return lambda: write_body(tmp)
    return path, BackgroundSerializer(path, 1 << 20, begin, lambda p: None, written.append)


def held_write(release: threading.Event, content: bytes):
    """A snapshot body that writes `content` once `release` is set."""
    def body(tmp):
        release.wait(10)
        with open(tmp, "wb") as f:
            f.write(content)
    return body


def test_the_tick_thread_polls_while_the_thread_writes_then_the_file_is_put_in_place(tmp_path):
    release, written = threading.Event(), []
    path, s = make(tmp_path, held_write(release, snap(b"new")), written)
    (tmp_path / "snapshot.bin").write_bytes(snap(b"old"))
    s.serialize((None, LAST, PREV, set()), 7)            # returns at once
    assert s.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 7)
    data, first, last = s.getTransmissionData("follower")  # the previous file is still sent
    assert (data, first, last) == (snap(b"old"), True, False)
    release.set()
    s.wait()
    assert s.checkSerializing() == (SERIALIZER_STATE.SUCCESS, 7)
    assert (tmp_path / "snapshot.bin").read_bytes() == snap(b"new") and written == [8]
    assert s.getTransmissionData("follower")[:2] == (snap(b"new"), True)   # from the start
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def test_one_superseded_by_a_snapshot_from_the_leader_is_dropped(tmp_path):
    release, written = threading.Event(), []
    path, s = make(tmp_path, held_write(release, b"stale"), written)
    (tmp_path / "snapshot.bin").write_bytes(b"from the leader")
    s.serialize((None, LAST, PREV, set()), 7)
    s.superseded()
    release.set()
    s.wait()
    assert s.checkSerializing() == (SERIALIZER_STATE.FAILED, 7)
    assert (tmp_path / "snapshot.bin").read_bytes() == b"from the leader" and written == []
    assert not (tmp_path / "snapshot.bin.tmp").exists()


def test_a_failed_write_leaves_the_previous_snapshot(tmp_path):
    written = []

    def body(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")
    path, s = make(tmp_path, body, written)
    (tmp_path / "snapshot.bin").write_bytes(b"old")
    s.serialize((None, LAST, PREV, set()), 7)
    s.wait()
    assert s.checkSerializing() == (SERIALIZER_STATE.FAILED, 7)
    assert (tmp_path / "snapshot.bin").read_bytes() == b"old" and written == []


def test_a_pinned_state_copies_what_it_saw_while_writes_go_on(tmp_path):
    def mkdir(st, index, name):
        assert st.apply(index, {"now": 1000, "op": "mkdir", "path": name, "parents": False,
                                "mode": 0o755, "owner": ""})["ok"]
    with MetadataState(str(tmp_path / "meta")) as st:
        mkdir(st, 1, "/a")
        pinned = st.pin()
        mkdir(st, 2, "/b")
        assert pinned.applied_index() == 1 and st.applied_index() == 2  # (a backup's header)
        with open(tmp_path / "copy.mdb", "wb") as f:
            pinned.copy_to_fd(f.fileno())
        pinned.close()
    MetadataState.install_copy(str(tmp_path / "copy.mdb"), str(tmp_path / "restored"))
    with MetadataState(str(tmp_path / "restored")) as copy:
        assert copy.applied_index() == 1
        assert copy.stat("/a")["type"] == "dir"
        with pytest.raises(NotFound):                     # made after the pin
            copy.stat("/b")


def test_no_snapshot_starts_while_one_is_being_sent(tmp_path):
    """Compaction after a new snapshot would cut the entries the follower being sent the
    current one needs next: it waits until the send is over, or has stalled."""
    written, now = [], [100.0]

    def body(tmp):
        with open(tmp, "wb") as f:
            f.write(snap(b"new"))
    path, s = make(tmp_path, body, written)
    s.clock = lambda: now[0]
    (tmp_path / "snapshot.bin").write_bytes(snap(b"x" * (3 << 20)))
    assert s.getTransmissionData("follower")[1:] == (True, False)
    s.serialize((None, LAST, PREV, set()), 7)
    assert s.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)    # deferred
    while not s.getTransmissionData("follower")[2]:      # the rest, to the last chunk
        pass
    s.serialize((None, LAST, PREV, set()), 7)            # the follower installs, catches up
    assert not s.busy
    now[0] += 31
    s.serialize((None, LAST, PREV, set()), 7)
    s.wait()
    assert s.checkSerializing() == (SERIALIZER_STATE.SUCCESS, 7) and written == [8]

    s.getTransmissionData("gone")                        # a follower that stopped answering
    s.serialize((None, LAST, PREV, set()), 8)
    assert not s.busy
    now[0] += 31
    s.serialize((None, LAST, PREV, set()), 8)
    assert s.busy
    s.wait()


def test_no_piece_is_handed_out_while_the_connection_still_has_a_backlog(tmp_path):
    """pysyncobj would read and queue pieces for a whole tick whatever the socket takes."""
    from master.snapshot_writer import PAUSE, SEND_BACKLOG
    queued = {"follower": 0}
    path = str(tmp_path / "snapshot.bin")
    s = BackgroundSerializer(path, 1 << 20, lambda tmp, e: None, lambda p: None, [].append,
                             backlog=queued.get)
    (tmp_path / "snapshot.bin").write_bytes(snap(b"y" * (3 << 20)))
    assert s.getTransmissionData("follower")[1:] == (True, False)
    queued["follower"] = SEND_BACKLOG
    assert s.getTransmissionData("follower") == PAUSE          # the file did not move on
    queued["follower"] = 0
    data, first, last = s.getTransmissionData("follower")
    assert len(data) == 1 << 20 and not first and not last


def test_a_big_store_is_not_copied_for_a_short_log(tmp_path, monkeypatch):
    """Over BIG_SNAPSHOT, a compaction waits for a log of LOG_SHARE of the snapshot (capped at
    BIG_SNAPSHOT); small or missing snapshots are written whenever pysyncobj asks."""
    import master.snapshot_writer as module
    monkeypatch.setattr(module, "BIG_SNAPSHOT", 1000)
    log = [0]
    path = str(tmp_path / "snapshot.bin")
    begun = []

    def begin(tmp, entries):
        begun.append(log[0])

        def write() -> None:
            with open(tmp, "wb") as f:
                f.write(b"s" * 4000)
        return write
    s = BackgroundSerializer(path, 1 << 20, begin, lambda p: None, lambda i: None,
                             log_bytes=lambda: log[0])

    def compact() -> None:
        s.serialize((None, LAST, PREV, set()), 7)
        s.wait()
        s.checkSerializing()

    compact()                                  # no snapshot yet: written
    assert begun == [0] and os.path.getsize(path) == 4000
    for log[0] in (0, 500, 999):               # 4,000 bytes: waits for min(1,000, 1,000)
        compact()
    assert begun == [0]
    log[0] = 1000
    compact()
    assert begun == [0, 1000]
    with open(path, "wb") as f:                # a small one: written whatever the log
        f.write(b"s" * 1000)
    log[0] = 1
    compact()
    assert begun == [0, 1000, 1]
