"""The leader checks its snapshot file as the pieces go out (master/snapshot_sender.py, behind
master/snapshot_writer.py getTransmissionData): a file damaged, cut off or unreadable while the
master runs never goes out whole — its last piece, on which a follower installs it, is held
back — and it is reported (the node moves it aside), whatever the piece boundaries, with several
followers sent it at once, each at its own position, and transmissions starting over."""
from __future__ import annotations

import logging
import os
import random

import pytest

from gfs.errors import DataLoss
from master import snapshot_sender
from master.snapshot_writer import BackgroundSerializer
from tests.unit.snapshot_files import flipped, header_of, old_snapshot_file, snapshot_file

IMAGE = random.Random(7).randbytes(5000)
GOOD = snapshot_file(header_of(), IMAGE)
IN_IMAGE = len(GOOD) - 2500         # a byte in the middle of the image
LAST = (b"", False, True)


class Leader:
    """A leader's serializer over a snapshot file in `tmp_path`; what it reports damaged is
    moved aside, as the node does (master/raft_snapshots.py _discard_snapshot)."""

    def __init__(self, tmp_path, batch: int = 1000):
        self.path = str(tmp_path / "snapshot.bin")
        self.damaged: list[BaseException] = []
        self.s = BackgroundSerializer(self.path, batch, lambda tmp, e: None, lambda p: None,
                                      lambda i: None, damaged=self._damaged)

    def _damaged(self, reason: BaseException) -> None:
        self.damaged.append(reason)
        os.rename(self.path, f"{self.path}.bad-{len(self.damaged)}")

    def put(self, data: bytes) -> None:
        """A new snapshot file (a new inode, as a compaction or an install leaves it)."""
        with open(self.path + ".new", "wb") as f:
            f.write(data)
        os.replace(self.path + ".new", self.path)

    def damage_in_place(self, at: int) -> None:
        """Flip a bit of the file as it lies (same file, same length): bit rot."""
        with open(self.path, "r+b") as f:
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(flipped(byte, 0))

    def pieces(self, follower, count: int, sent: bytes = b"") -> bytes:
        """`count` more pieces for `follower` (after `sent`), none of them the last: all it
        was sent so far."""
        for _ in range(count):
            data, first, last = self.s.getTransmissionData(follower)
            assert not last and first == (sent == b"")
            sent += data
        return sent

    def send(self, follower, sent: bytes = b"") -> tuple[bytes, tuple | None]:
        """The rest of the file for `follower` (after `sent`): what went out, and the last
        piece (None: the send stopped before it)."""
        while True:
            piece = self.s.getTransmissionData(follower)
            if piece is None:
                return sent, None
            assert piece[1] == (sent == b"")
            sent += piece[0]
            if piece[2]:
                return sent, piece

    def aside(self) -> list[bytes]:
        names = sorted(n for n in os.listdir(os.path.dirname(self.path)) if ".bad-" in n)
        return [open(os.path.join(os.path.dirname(self.path), n), "rb").read() for n in names]


@pytest.mark.parametrize("batch", [7, 1000, 1 << 20], ids=["header-in-pieces", "1000", "1MiB"])
def test_a_whole_file_goes_out_and_the_same_file_damaged_in_place_does_not(tmp_path, batch,
                                                                           caplog):
    leader = Leader(tmp_path, batch)
    leader.put(GOOD)
    assert leader.send("f") == (GOOD, LAST)
    leader.damage_in_place(IN_IMAGE)
    bad = flipped(GOOD, IN_IMAGE)
    with caplog.at_level(logging.INFO):
        sent, last = leader.send("f")
        assert (sent, last) == (bad, None)      # every byte, but not the last piece
        [reason] = leader.damaged
        assert isinstance(reason, DataLoss) and "does not match its checksum" in str(reason)
        assert "being sent to f" in str(reason)
        assert leader.aside() == [bad] and not os.path.exists(leader.path)
        assert not leader.s.sending()           # compaction is no longer held back
        for _ in range(3):                      # until a new file is written: nothing to send
            assert leader.s.getTransmissionData("f") is None
    assert caplog.text.count("no snapshot to send") == 1 and "Traceback" not in caplog.text
    leader.put(GOOD)
    assert leader.send("f") == (GOOD, LAST) and len(leader.damaged) == 1


@pytest.mark.parametrize("data, error", [
    (GOOD[:60] + b"\xff" * 40 + GOOD[100:], "damaged header"),
    (b"not a snapshot at all" * 100, "not a gfs snapshot"),
], ids=["damaged-header", "not-a-snapshot"])
def test_a_damaged_header_stops_the_send_before_any_of_it_goes_out(tmp_path, data, error):
    leader = Leader(tmp_path)
    leader.put(data)
    assert leader.s.getTransmissionData("f") is None
    [reason] = leader.damaged
    assert isinstance(reason, ValueError) and error in str(reason)
    assert leader.aside() == [data]


@pytest.mark.parametrize("data, error", [
    (GOOD[:-100], "cut off"),
    (GOOD[:30], "ends inside its header"),
    (b"", "ends inside its header"),
    (GOOD + b"more", "cut off or padded"),
], ids=["in-the-image", "in-the-header", "empty", "padded"])
def test_a_file_that_is_not_as_long_as_its_header_says_is_not_sent_whole(tmp_path, data, error):
    leader = Leader(tmp_path)
    leader.put(data)
    assert leader.send("f") == (data, None)
    [reason] = leader.damaged
    assert error in str(reason)
    assert leader.aside() == [data]


def test_a_file_cut_short_while_it_is_being_sent(tmp_path):
    leader = Leader(tmp_path)
    leader.put(GOOD)
    sent = leader.pieces("f", 2)
    os.truncate(leader.path, len(GOOD) - 1000)
    assert leader.send("f", sent) == (GOOD[:-1000], None)
    [reason] = leader.damaged
    assert isinstance(reason, DataLoss) and "cut off" in str(reason)


def test_several_followers_are_sent_the_file_at_once_each_checked_at_its_own_position(tmp_path):
    leader = Leader(tmp_path)
    leader.put(GOOD)
    sent = {"a": leader.pieces("a", 2)}
    sent["b"] = leader.pieces("b", 1)
    sent["a"] = leader.pieces("a", 1, sent["a"])
    sent["c"] = leader.pieces("c", 3)
    for follower in "bac":
        assert leader.send(follower, sent[follower]) == (GOOD, LAST)
    assert leader.damaged == []

    leader.damage_in_place(IN_IMAGE)
    bad = flipped(GOOD, IN_IMAGE)
    sent = {"a": leader.pieces("a", 3), "b": leader.pieces("b", 1)}
    assert leader.s.sending()
    assert leader.send("a", sent["a"]) == (bad, None)
    assert len(leader.damaged) == 1
    # b was sent the same file: it gets no more of it (and nothing else until a new one)
    assert leader.s.getTransmissionData("b") is None
    assert not leader.s.sending()
    leader.put(GOOD)
    assert leader.send("b") == (GOOD, LAST)     # from the first byte of the new file
    assert len(leader.damaged) == 1


def test_a_transmission_that_starts_over_is_checked_from_its_first_byte(tmp_path):
    leader = Leader(tmp_path)
    leader.put(GOOD)
    leader.pieces("f", 3)
    leader.s.cancelTransmisstion("f")           # the follower disconnected
    assert leader.send("f") == (GOOD, LAST)
    assert leader.send("f") == (GOOD, LAST)     # again after a whole one
    sent = leader.pieces("f", 4)
    leader.damage_in_place(1500)                # in a part this transmission already sent
    assert leader.send("f", sent) == (GOOD, LAST)   # it read the file before the damage
    leader.pieces("f", 1)
    leader.s.cancelTransmisstion("f")           # then starts over, reading the file again
    assert leader.send("f") == (flipped(GOOD, 1500), None)     # read again from byte 0
    assert len(leader.damaged) == 1


def test_an_older_file_found_damaged_leaves_the_newer_one_in_place(tmp_path):
    """A transmission still reading a file that a newer snapshot has replaced since reports
    nothing: the file at the path is not the damaged one."""
    leader = Leader(tmp_path)
    bad = flipped(GOOD, IN_IMAGE)
    leader.put(bad)
    sent = leader.pieces("f", 2)
    newer = snapshot_file(header_of(9), IMAGE[::-1])
    leader.put(newer)
    assert leader.send("f", sent) == (bad, None)
    assert leader.damaged == [] and open(leader.path, "rb").read() == newer
    assert leader.send("f") == (newer, LAST)


def test_a_file_that_cannot_be_read_while_it_is_sent(tmp_path, monkeypatch):
    leader = Leader(tmp_path)
    leader.put(GOOD)

    class Unreadable:
        """The snapshot file, which fails with EIO after its first piece."""

        def __init__(self, path, mode):
            self.f = open(path, mode)
            self.reads = 0

        def read(self, size):
            self.reads += 1
            if self.reads > 1:
                raise OSError(5, "Input/output error")
            return self.f.read(size)

        def fileno(self):
            return self.f.fileno()

        def close(self):
            self.f.close()
    monkeypatch.setattr(snapshot_sender, "open", Unreadable, raising=False)
    assert leader.send("f") == (GOOD[:1000], None)
    [reason] = leader.damaged
    assert isinstance(reason, OSError) and reason.errno == 5
    assert leader.aside() == [GOOD]


def test_an_old_format_file_has_no_checksum_to_check_and_goes_out_whole(tmp_path, caplog):
    leader = Leader(tmp_path)
    old = old_snapshot_file(header_of(), IMAGE)
    leader.put(old)
    with caplog.at_level(logging.WARNING):
        assert leader.send("f") == (old, LAST)
    assert "old format" in caplog.text and leader.damaged == []
