"""master/snapshot_receiver.py: the store image of a snapshot being received is written into
place piece by piece, and handed to the install only when complete and of the same file."""
import os

import pytest

from master.snapshot_receiver import SnapshotReceiver
from master.snapshot_writer import BackgroundSerializer
from tests.unit.snapshot_files import image_of, old_snapshot_file, snapshot_file


def pieces(data: bytes, sizes):
    """(piece, first, last) as pysyncobj hands them over: the last one is empty."""
    out, at = [], 0
    for n in sizes + [len(data)]:
        if at < len(data):
            out.append((data[at:at + n], at == 0, False))
            at += n
    return out + [(b"", False, True)]


@pytest.fixture
def receiver(tmp_path):
    targets = []

    def target():
        targets.append(str(tmp_path / f"image-{len(targets)}"))
        return targets[-1]
    r = SnapshotReceiver(target)
    r.targets = targets
    return r


@pytest.mark.parametrize("sizes", [[3], [8, 5, 1], [100], [20, 2000]])
@pytest.mark.parametrize("make", [snapshot_file, old_snapshot_file], ids=["checksummed", "old"])
def test_the_image_after_the_header_is_written_whatever_the_piece_boundaries(receiver, sizes,
                                                                            make):
    image = os.urandom(5000)
    data = make(b"header-bytes", image)
    for piece in pieces(data, sizes):
        receiver.piece(*piece)
    with open(receiver.targets[-1], "rb") as f:
        assert f.read() == image
    prefix = data[:len(data) - len(image)]
    assert receiver.take_ready(prefix) == image_of(image)     # hashed as it arrived
    assert receiver.take_ready(prefix) is None                # handed over once


def test_a_damaged_image_is_handed_over_with_what_it_hashed_to(receiver):
    """The receiver only reports what arrived; the install compares it with the header
    (master/snapshot_format.py check_image)."""
    image = bytearray(os.urandom(4000))
    data = bytearray(snapshot_file(b"h", bytes(image)))
    data[-1000] ^= 0x01
    image[-1000] ^= 0x01
    for piece in pieces(bytes(data), [1500]):
        receiver.piece(*piece)
    got = receiver.take_ready(bytes(data[:len(data) - len(image)]))
    assert got == image_of(bytes(image)) and got.length == 4000


def test_an_image_of_another_file_is_not_handed_over(receiver):
    data = snapshot_file(b"header-a", b"x" * 100)
    for piece in pieces(data, [50]):
        receiver.piece(*piece)
    assert not receiver.take_ready(snapshot_file(b"header-b", b""))


def test_a_transfer_that_starts_over_replaces_the_partial_one(receiver):
    old = snapshot_file(b"old", b"o" * 1000)
    for piece in pieces(old, [40, 40])[:2]:         # never finished
        receiver.piece(*piece)
    new = snapshot_file(b"new", b"n" * 700)
    for piece in pieces(new, [300]):
        receiver.piece(*piece)
    assert receiver.take_ready(new[:len(new) - 700])
    with open(receiver.targets[-1], "rb") as f:
        assert f.read() == b"n" * 700


def test_pieces_without_a_first_one_are_ignored(receiver):
    data = snapshot_file(b"h", b"z" * 10)
    for piece in pieces(data, [5])[1:]:
        receiver.piece(*piece)
    assert receiver.targets == []
    assert not receiver.take_ready(data[:-10])


def test_a_file_that_is_not_a_snapshot_is_abandoned(receiver):
    receiver.piece(b"NOTASNAPSHOT-AT-ALL", True, False)
    receiver.piece(b"", False, True)
    assert not receiver.take_ready(b"NOTASNAPSHOT-AT-ALL")


def test_a_transfer_ending_inside_its_header_is_not_ready(receiver):
    data = snapshot_file(b"a-long-header", b"")
    receiver.piece(data[:12], True, False)
    receiver.piece(b"", False, True)
    assert not receiver.take_ready(data)


def test_a_failed_write_abandons_the_image(tmp_path):
    r = SnapshotReceiver(lambda: str(tmp_path / "missing-dir" / "image"))
    data = snapshot_file(b"h", b"y" * 10)
    for piece in pieces(data, [4]):
        r.piece(*piece)                              # logged, not raised
    assert not r.take_ready(data[:-10])


def test_the_serializer_gives_every_received_piece_to_the_receiver_and_keeps_the_file(tmp_path):
    got = []
    path = str(tmp_path / "snapshot.bin")
    s = BackgroundSerializer(path, 1 << 20, lambda tmp, e: None, lambda p: None, lambda i: None,
                             receiver=lambda *piece: got.append(piece))
    data = snapshot_file(b"hdr", os.urandom(3000))
    completed = [s.setTransmissionData(piece) for piece in pieces(data, [1000, 1000])]
    assert completed == [False, False, False, True]
    assert got == pieces(data, [1000, 1000])
    with open(path, "rb") as f:
        assert f.read() == data


def test_the_image_is_made_durable_as_it_arrives_without_the_writer_waiting(receiver,
                                                                          monkeypatch):
    """A sync on the way runs in a thread of its own (one at a time) while the pieces keep
    coming; the last piece waits for it and syncs the rest itself."""
    import threading

    import master.snapshot_receiver as module
    gate = threading.Event()
    synced = []

    def fdatasync(fd):
        synced.append(threading.current_thread().name)
        if threading.current_thread().name == "snapshot-sync":
            assert gate.wait(10)

    monkeypatch.setattr(module, "SYNC_EVERY", 1000)
    monkeypatch.setattr(module.os, "fdatasync", fdatasync)
    data = snapshot_file(b"h", b"d" * 4500)
    *on_the_way, last = pieces(data, [600] * 7)
    for piece in on_the_way:                 # returns though the first sync is held
        receiver.piece(*piece)
    assert synced == ["snapshot-sync"]       # one at a time: the others wait for it to end
    assert not receiver.take_ready(data[:-4500])
    gate.set()
    receiver.piece(*last)
    assert synced == ["snapshot-sync", threading.current_thread().name]
    assert receiver.take_ready(data[:-4500]) is not None


@pytest.fixture
def failing_sync_on_the_way(monkeypatch):
    """Syncs every 1,000 bytes; those on the way (in their own thread) fail with EIO."""
    import errno
    import threading

    import master.snapshot_receiver as module

    def fdatasync(fd):
        if threading.current_thread().name == "snapshot-sync":
            raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(module, "SYNC_EVERY", 1000)
    monkeypatch.setattr(module.os, "fdatasync", fdatasync)


def test_a_failed_sync_on_the_way_abandons_the_image(receiver, failing_sync_on_the_way):
    data = snapshot_file(b"h", b"d" * 4500)
    for piece in pieces(data, [600] * 7):
        receiver.piece(*piece)
    assert receiver.take_ready(data[:-4500]) is None    # copied from the received file instead


def test_a_failed_sync_on_the_way_of_the_received_file_fails_the_transfer(tmp_path,
                                                                           failing_sync_on_the_way):
    s = BackgroundSerializer(str(tmp_path / "snapshot.bin"), 1 << 20, lambda tmp, e: None,
                             lambda p: None, lambda i: None)
    data = snapshot_file(b"hdr", os.urandom(3000))
    completed = [s.setTransmissionData(piece) for piece in pieces(data, [1000, 1000])]
    assert completed == [False, False, False, False]      # not installed
