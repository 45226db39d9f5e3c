"""The cold tier: zstd frames with pass-through, byte-identical range reads, moves between tiers,
crash recovery, corruption of frames and of the frame index, scrubbing, MoveChunk over gRPC,
and tiers in heartbeats."""
from __future__ import annotations

import os
import random
import threading

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkserver import cold
from chunkserver.heartbeat import Heartbeater
from chunkserver.scrubber import Scrubber
from chunkserver.store import COLD, HEADER_SIZE, HOT, ChunkStore
from chunkfiles import files_under, flip_bit
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer
from gfs.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from gfs.auth.daemon import DaemonAuth
from gfs.transfer import read_chunk
from grpc_node import CLUSTER_SECRET, Node, daemon_channels
from proto import chunkserver_pb2 as cpb
from proto import master_pb2 as pb

BS = BLOCK_SIZE
FRAME = 16 * BS
WORDS = ("chunk server master replica block frame tier cold hot the a of to and in is that "
         "for it with as was on be at by this had not are but from or have an they which "
         "one you were her all she there would their we him been has when who will more no "
         "if out so said what up its about into than them can only other new some could time "
         "these two may then do first any my now such like our over man me even most made").split()


def _corpus(n: int = 2 << 20) -> bytes:
    """Text-like bytes: random words in numbered lines of random length."""
    rng = random.Random(0)
    out = bytearray()
    while len(out) < n:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        out += f"{rng.randint(0, 99999):05d} {line.capitalize()}.\n".encode()
    return bytes(out[:n])


CORPUS = _corpus()


def text(n: int, seed: int = 0) -> bytes:
    """n bytes of the text corpus, starting at a place that depends on the seed."""
    start = seed * 7919 % len(CORPUS)
    out = CORPUS[start:start + n]
    while len(out) < n:
        out += CORPUS[:n - len(out)]
    return out


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def checksum_of(data: bytes) -> int:
    summer = ChunkChecksummer()
    summer.update(data)
    return summer.finish()


def put(store: ChunkStore, handle: int, data: bytes, version: int = 1):
    w = store.begin_write(handle, version)
    for i in range(0, len(data), 300_001):
        w.write(data[i:i + 300_001])
    return w.commit()


def read_all(store: ChunkStore, handle: int, **kw) -> bytes:
    return b"".join(store.read(handle, **kw))




def path(root, tier: str, handle: int, version: int, kind: str):
    return root / tier / f"{handle & 0xFF:02x}" / f"{handle:016x}-{version}.{kind}"


def frame_index(store: ChunkStore, handle: int) -> cold.ColdIndex:
    meta = store.get(handle)
    with open(store.data_path(meta), "rb") as f:
        return cold.read_index(f.fileno(), meta.length, meta.checksum, "test")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cs"


@pytest.fixture
def store(root):
    return ChunkStore(str(root))


# -- compression -------------------------------------------------------------------------------


def test_text_compresses_well_and_reads_back_identical(store, root):
    data = text(3 * FRAME + 5 * BS + 123, seed=1)
    hot = put(store, 1, data, version=4)
    meta = store.move(1, 4, COLD)
    assert (meta.tier, meta.version, meta.length, meta.checksum) == (COLD, 4, hot.length,
                                                                      hot.checksum)
    assert meta.stored_bytes == os.path.getsize(path(root, "cold", 1, 4, "zst"))
    assert meta.stored_bytes / meta.length < 0.5
    index = frame_index(store, 1)
    assert len(index.frames) == 4 and not any(f[2] & cold.RAW for f in index.frames)
    assert read_all(store, 1) == data
    assert store.verify(1) is True
    tiers = {t["name"]: t for t in store.usage()["tiers"]}
    assert tiers[COLD]["chunk_count"] == 1 and tiers[HOT]["chunk_count"] == 0
    assert tiers[COLD]["logical_bytes"] == len(data)
    assert tiers[COLD]["stored_bytes"] == meta.stored_bytes
    assert store.usage()["used_bytes"] == len(data)


def test_random_data_is_stored_pass_through(store):
    data = noise(2 * FRAME + 7, seed=2)
    meta = put(store, 2, data)
    moved = store.move(2, 1, COLD)
    index = frame_index(store, 2)
    assert all(f[2] & cold.RAW for f in index.frames)
    assert moved.stored_bytes == len(data) + cold.index_size(3)     # only the index on top
    assert read_all(store, 2) == data and moved.checksum == meta.checksum


def test_each_frame_is_compressed_or_passed_through_on_its_own(store):
    data = text(FRAME, 3) + noise(FRAME, 3) + text(BS + 1, 4) + bytes(FRAME)[:BS // 2]
    put(store, 3, data)
    store.move(3, 1, COLD)
    flags = [f[2] & cold.RAW for f in frame_index(store, 3).frames]
    assert flags == [0, cold.RAW, 0]
    assert read_all(store, 3) == data


@pytest.mark.parametrize("length", [0, 1, BS - 1, BS, BS + 1, FRAME - 1, FRAME, FRAME + 1,
                                    2 * FRAME + 3 * BS + 17])
def test_move_round_trip_keeps_bytes_sidecar_and_publication_time(store, root, length):
    data = text(length, seed=length)
    hot = put(store, 0x104, data, version=2)
    sidecar = path(root, "hot", 0x104, 2, "sums").read_bytes()
    moved = store.move(0x104, 2, COLD)
    assert files_under(root / "hot") == []
    assert files_under(root / "cold") == ["0000000000000104-2.sums", "0000000000000104-2.zst"]
    assert path(root, "cold", 0x104, 2, "sums").read_bytes() == sidecar
    assert moved.mtime == pytest.approx(hot.mtime, abs=1e-3)
    assert read_all(store, 0x104) == data
    back = store.move(0x104, 2, HOT)
    assert (back.tier, back.stored_bytes, back.checksum) == (HOT, length, hot.checksum)
    assert back.mtime == pytest.approx(hot.mtime, abs=1e-3)
    assert files_under(root / "cold") == []
    assert path(root, "hot", 0x104, 2, "chunk").read_bytes() == data
    assert path(root, "hot", 0x104, 2, "sums").read_bytes() == sidecar
    assert files_under(root / "tmp") == []


def test_move_is_idempotent_and_checks_its_arguments(store):
    put(store, 5, text(BS * 3, 5), version=3)
    first = store.move(5, 3, COLD)
    assert store.move(5, 3, COLD) is first
    assert store.move(5, None, COLD) is first
    with pytest.raises(FailedPrecondition, match="stored version is 3"):
        store.move(5, 2, HOT)
    with pytest.raises(NotFound):
        store.move(6, 1, COLD)
    with pytest.raises(InvalidArgument, match="tier"):
        store.move(5, 3, "tape")
    assert store.move(5, 3, HOT).tier == HOT


def test_reopen_finds_cold_chunks(store, root):
    data = text(FRAME + 9, 6)
    put(store, 7, data, version=5)
    put(store, 8, b"hot one")
    moved = store.move(7, 5, COLD)
    again = ChunkStore(str(root))
    assert again.get(7) == moved
    assert [(m.handle, m.tier) for m in again.chunks()] == [(7, COLD), (8, HOT)]
    assert read_all(again, 7) == data


def test_a_separate_cold_dir_keeps_its_temp_files_on_its_own_disk(tmp_path, monkeypatch):
    root, cold_dir = tmp_path / "data", tmp_path / "other-disk" / "gfs-cold"
    store = ChunkStore(str(root), cold_dir=str(cold_dir))
    data = text(2 * FRAME, 7)
    put(store, 9, data)
    seen = []
    real_mkstemp = __import__("tempfile").mkstemp

    def spy(*args, **kw):
        seen.append(kw.get("dir"))
        return real_mkstemp(*args, **kw)

    monkeypatch.setattr("chunkserver.store.tempfile.mkstemp", spy)
    store.move(9, 1, COLD)
    assert seen == [str(cold_dir / "tmp")]
    assert files_under(cold_dir) == ["0000000000000009-1.sums", "0000000000000009-1.zst"]
    assert not (root / "cold").exists()
    assert read_all(ChunkStore(str(root), cold_dir=str(cold_dir)), 9) == data
    store.move(9, 1, HOT)
    assert seen[-1] == str(root / "tmp")


# -- range reads -------------------------------------------------------------------------------

RANGE_DATA = text(2 * FRAME + 5 * BS + 4321, seed=11)[:FRAME] + noise(FRAME, 11) + \
    text(5 * BS + 4321, seed=12)         # frames: compressed, raw, compressed (short)


@pytest.fixture(scope="module")
def cold_store(tmp_path_factory):
    store = ChunkStore(str(tmp_path_factory.mktemp("cold")))
    put(store, 1, RANGE_DATA)
    store.move(1, 1, COLD)
    return store


def test_range_reads_match_the_hot_original(cold_store, tmp_path):
    hot = ChunkStore(str(tmp_path / "hot"))
    put(hot, 1, RANGE_DATA)
    n = len(RANGE_DATA)
    points = sorted({0, 1, BS - 1, BS, BS + 1, 7 * BS + 5, FRAME - 1, FRAME, FRAME + 1,
                     2 * FRAME - BS, 2 * FRAME - 1, 2 * FRAME, 2 * FRAME + 1,
                     n - (n % BS) - 1, n - (n % BS), n - 1, n})
    lengths = [0, 1, 2, 100, BS - 1, BS, BS + 1, FRAME - 1, FRAME, FRAME + 1, FRAME + BS + 3,
               2 * FRAME + 1, -1]
    checked = 0
    for offset in points:
        for length in lengths + [n - offset]:
            if length != -1 and offset + length > n:
                continue
            pieces = list(cold_store.read(1, offset, length))
            assert all(0 < len(p) <= BS for p in pieces)
            got = b"".join(pieces)
            assert got == b"".join(hot.read(1, offset, length)), (offset, length)
            assert got == (RANGE_DATA[offset:] if length == -1
                           else RANGE_DATA[offset:offset + length])
            checked += 1
    assert checked > 150


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_cold_range_reads_match_slicing(cold_store, data):
    offset = data.draw(st.integers(0, len(RANGE_DATA)), label="offset")
    length = data.draw(st.one_of(st.just(-1), st.integers(0, len(RANGE_DATA) - offset)),
                       label="length")
    want = RANGE_DATA[offset:] if length == -1 else RANGE_DATA[offset:offset + length]
    assert read_all(cold_store, 1, offset=offset, length=length) == want


def test_a_range_read_decodes_only_the_frames_it_needs(cold_store, monkeypatch):
    decoded = []
    real = cold.decode_frame

    def counting(dctx, index, frame, payload):
        decoded.append(frame)
        return real(dctx, index, frame, payload)

    monkeypatch.setattr(cold, "decode_frame", counting)
    read_all(cold_store, 1, offset=FRAME + 3 * BS + 1, length=10)
    assert decoded == [1]
    decoded.clear()
    read_all(cold_store, 1, offset=FRAME - 1, length=2)
    assert decoded == [0, 1]
    decoded.clear()
    read_all(cold_store, 1, offset=len(RANGE_DATA) - 1)
    assert decoded == [2]


# -- crash recovery ----------------------------------------------------------------------------


def snapshot(root, tier: str, handle: int, version: int, kinds) -> dict:
    return {k: path(root, tier, handle, version, k).read_bytes() for k in kinds}


def restore(root, tier: str, handle: int, version: int, files: dict) -> None:
    for k, raw in files.items():
        path(root, tier, handle, version, k).write_bytes(raw)


def test_crash_before_the_renames_leaves_only_temp_files(store, root):
    data = text(FRAME + 3, 20)
    put(store, 0x20, data)
    stored = snapshot(root, "hot", 0x20, 1, ["chunk", "sums"])
    store.move(0x20, 1, COLD)
    cold_files = snapshot(root, "cold", 0x20, 1, ["zst", "sums"])
    store.move(0x20, 1, HOT)
    # As if a hot -> cold move had written its temp files and died.
    (root / "cold" / "tmp" / "cold-0000000000000020-1-x.zst").write_bytes(cold_files["zst"])
    (root / "cold" / "tmp" / "cold-0000000000000020-1-x.sums").write_bytes(cold_files["sums"])
    (root / "cold" / "tmp" / "someone-else").write_bytes(b"kept")
    again = ChunkStore(str(root))
    assert files_under(root / "cold") == ["someone-else"]
    assert again.get(0x20).tier == HOT and read_all(again, 0x20) == data
    assert snapshot(root, "hot", 0x20, 1, ["chunk", "sums"]) == stored


@pytest.mark.parametrize("direction", ["to cold", "to hot"])
def test_crash_between_the_two_renames_keeps_the_source(store, root, direction):
    data = text(2 * FRAME + 1, 21)
    put(store, 0x21, data)
    store.move(0x21, 1, COLD)
    zst = snapshot(root, "cold", 0x21, 1, ["zst"])
    store.move(0x21, 1, HOT)
    if direction == "to cold":            # the data file reached the cold tier, not the sidecar
        restore(root, "cold", 0x21, 1, zst)
        keep = HOT
    else:                                 # the reverse: cold source, hot data without sidecar
        store.move(0x21, 1, COLD)
        path(root, "hot", 0x21, 1, "chunk").write_bytes(data)
        keep = COLD
    again = ChunkStore(str(root))
    assert again.get(0x21).tier == keep
    assert read_all(again, 0x21) == data
    expect = {HOT: ["0000000000000021-1.chunk", "0000000000000021-1.sums"],
              COLD: ["0000000000000021-1.sums", "0000000000000021-1.zst"]}[keep]
    assert files_under(root / keep) == expect
    assert files_under(root / (COLD if keep == HOT else HOT)) == []


@pytest.mark.parametrize("source", [HOT, COLD])
def test_crash_after_the_renames_keeps_exactly_one_copy(store, root, source):
    """Both tiers hold a complete copy of the version: the hot one is kept, the other deleted."""
    data = text(FRAME + 5 * BS, 22)
    put(store, 0x22, data, version=3)
    other = COLD if source == HOT else HOT
    store.move(0x22, 3, source)
    kinds = {HOT: ["chunk", "sums"], COLD: ["zst", "sums"]}
    leftover = snapshot(root, source, 0x22, 3, kinds[source])
    store.move(0x22, 3, other)
    restore(root, source, 0x22, 3, leftover)       # the old copy was not removed yet
    again = ChunkStore(str(root))
    assert again.get(0x22).tier == HOT
    assert files_under(root / COLD) == []
    assert read_all(again, 0x22) == data and again.verify(0x22)


def test_a_marked_copy_loses_against_an_unmarked_one(store, root):
    data = text(FRAME, 23)
    put(store, 0x23, data)
    hot = snapshot(root, "hot", 0x23, 1, ["chunk", "sums"])
    store.move(0x23, 1, COLD)
    restore(root, "hot", 0x23, 1, hot)
    path(root, "hot", 0x23, 1, "bad").write_text("damaged")
    again = ChunkStore(str(root))
    assert again.get(0x23).tier == COLD and again.corrupt() == {}
    assert files_under(root / "hot") == []


def test_a_half_removed_old_copy_is_cleaned_up(store, root):
    data = text(FRAME + 1, 24)
    put(store, 0x24, data)
    hot_data = path(root, "hot", 0x24, 1, "chunk").read_bytes()
    store.move(0x24, 1, COLD)
    path(root, "hot", 0x24, 1, "chunk").write_bytes(hot_data)    # sidecar gone, data not yet
    path(root, "hot", 0x24, 1, "bad").write_text("old marker")
    again = ChunkStore(str(root))
    assert again.get(0x24).tier == COLD and again.corrupt() == {}
    assert files_under(root / "hot") == []


def test_the_newest_version_wins_across_tiers(store, root):
    put(store, 0x25, text(BS, 25), version=1)
    store.move(0x25, 1, COLD)
    old = snapshot(root, "cold", 0x25, 1, ["zst", "sums"])
    new = text(2 * BS, 26)
    put(store, 0x25, new, version=2)                   # a newer version lands hot
    assert files_under(root / "cold") == []
    restore(root, "cold", 0x25, 1, old)                # crash before the old one was removed
    again = ChunkStore(str(root))
    assert (again.get(0x25).version, again.get(0x25).tier) == (2, HOT)
    assert files_under(root / "cold") == [] and read_all(again, 0x25) == new
    # And the other way round: a newer version in cold beats an older one in hot.
    again.move(0x25, 2, COLD)
    path(root, "hot", 0x25, 1, "chunk").write_bytes(text(BS, 25))
    restore(root, "hot", 0x25, 1, {"sums": old["sums"]})
    third = ChunkStore(str(root))
    assert (third.get(0x25).version, third.get(0x25).tier) == (2, COLD)
    assert files_under(root / "hot") == []


# -- corruption --------------------------------------------------------------------------------


def cold_chunk(store: ChunkStore, handle: int, data: bytes, version: int = 1):
    put(store, handle, data, version)
    return store.move(handle, version, COLD)


def test_damage_in_a_compressed_frame_never_yields_wrong_bytes(store, root):
    data = text(3 * FRAME, 30)
    cold_chunk(store, 0x30, data)
    index = frame_index(store, 0x30)
    zst = path(root, "cold", 0x30, 1, "zst")
    original = zst.read_bytes()
    rng = random.Random(30)
    failed = 0
    for _ in range(12):
        frame = rng.randrange(3)
        offset, size, _ = index.frames[frame]
        damaged = bytearray(original)
        damaged[offset + rng.randrange(size)] ^= 1 << rng.randrange(8)
        zst.write_bytes(damaged)
        got = bytearray()
        try:
            for piece in store.read(0x30):
                got += piece
        except DataLoss as err:
            assert "block" in str(err)
            failed += 1
            assert store.corrupt() == {0x30: 1}
        assert bytes(got) == data[:len(got)]           # never a wrong byte
        # The other frames are still served, verified.
        for other in {0, 1, 2} - {frame}:
            assert read_all(store, 0x30, offset=other * FRAME, length=FRAME) == \
                data[other * FRAME:(other + 1) * FRAME]
        zst.write_bytes(original)
    assert failed >= 10
    assert path(root, "cold", 0x30, 1, "bad").exists()


def test_a_frame_that_does_not_decode_fails_its_blocks(store, root):
    data = text(2 * FRAME + BS, 31)
    cold_chunk(store, 0x31, data)
    offset, _, _ = frame_index(store, 0x31).frames[1]
    with open(path(root, "cold", 0x31, 1, "zst"), "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 8)                           # wreck the zstd frame header
    with pytest.raises(DataLoss, match="block 20 .*cold frame 1 cannot be decoded"):
        read_all(store, 0x31, offset=FRAME + 4 * BS, length=5)
    assert store.corrupt() == {0x31: 1}
    assert read_all(store, 0x31, offset=0, length=FRAME) == data[:FRAME]
    assert read_all(store, 0x31, offset=2 * FRAME) == data[2 * FRAME:]
    assert store.verify(0x31) is False


def test_a_bit_flip_in_a_raw_frame_fails_only_its_block(store, root):
    data = noise(2 * FRAME, 32)
    cold_chunk(store, 0x32, data)
    offset, _, flags = frame_index(store, 0x32).frames[1]
    assert flags & cold.RAW
    flip_bit(path(root, "cold", 0x32, 1, "zst"), offset + 5 * BS + 9)
    with pytest.raises(DataLoss, match="block 21"):
        read_all(store, 0x32)
    assert read_all(store, 0x32, offset=FRAME, length=5 * BS) == data[FRAME:FRAME + 5 * BS]
    assert read_all(store, 0x32, offset=FRAME + 6 * BS) == data[FRAME + 6 * BS:]


@pytest.mark.parametrize("where", [0, 5, 12, 17, 25, 33, 38, cold.HEADER_SIZE + 3,
                                   cold.HEADER_SIZE + 16 + 8, cold.HEADER_SIZE + 2 * 16 + 2])
def test_damage_in_the_header_or_frame_index_is_detected(store, root, where):
    data = text(2 * FRAME + 1, 33)
    cold_chunk(store, 0x33, data)
    flip_bit(path(root, "cold", 0x33, 1, "zst"), where)
    with pytest.raises(DataLoss, match="cold"):
        store.read(0x33, 0, 1)                  # refused at the call, even for one byte
    assert store.corrupt() == {0x33: 1}
    assert path(root, "cold", 0x33, 1, "bad").exists()
    assert ChunkStore(str(root)).corrupt() == {0x33: 1}


@pytest.mark.parametrize("damage", ["truncated", "grown", "gone", "sidecar"])
def test_damaged_cold_files_are_data_loss(store, root, damage):
    cold_chunk(store, 0x34, text(FRAME + BS, 34))
    zst, sums = path(root, "cold", 0x34, 1, "zst"), path(root, "cold", 0x34, 1, "sums")
    if damage == "truncated":
        os.truncate(zst, os.path.getsize(zst) - 1)
    elif damage == "grown":
        with open(zst, "ab") as f:
            f.write(b"x")
    elif damage == "gone":
        os.unlink(zst)
    else:
        flip_bit(sums, HEADER_SIZE + 8 + 1)
    with pytest.raises(DataLoss):
        store.read(0x34)
    assert store.corrupt() == {0x34: 1}


def test_a_bad_source_block_stops_the_move(store, root):
    data = text(2 * FRAME, 35)
    put(store, 0x35, data)
    flip_bit(path(root, "hot", 0x35, 1, "chunk"), FRAME + 3)
    with pytest.raises(DataLoss, match="block 16"):
        store.move(0x35, 1, COLD)
    assert store.get(0x35).tier == HOT and store.corrupt() == {0x35: 1}
    assert files_under(root / "cold") == [] and files_under(root / "tmp") == []
    with pytest.raises(FailedPrecondition, match="marked corrupt"):
        store.move(0x35, 1, COLD)                     # not even tried again
    # The same from the cold side.
    put(store, 0x36, data)
    store.move(0x36, 1, COLD)
    offset, _, _ = frame_index(store, 0x36).frames[1]
    flip_bit(path(root, "cold", 0x36, 1, "zst"), offset + 40)
    with pytest.raises(DataLoss):
        store.move(0x36, 1, HOT)
    assert store.get(0x36).tier == COLD and store.is_corrupt(0x36, 1)
    assert files_under(root / "hot") == ["0000000000000035-1.bad", "0000000000000035-1.chunk",
                                         "0000000000000035-1.sums"]


# -- writes, deletes and concurrency -----------------------------------------------------------


def test_a_write_of_a_chunk_held_cold_lands_hot(store, root):
    data = text(FRAME + 2, 40)
    cold_chunk(store, 0x40, data, version=2)
    store.mark_corrupt(0x40, 2, "test")
    meta = put(store, 0x40, data, version=2)          # repair in place: now hot
    assert meta.tier == HOT and store.corrupt() == {}
    assert files_under(root / "cold") == []
    assert read_all(store, 0x40) == data
    store.move(0x40, 2, COLD)
    put(store, 0x40, b"newer", version=3)
    assert files_under(root / "cold") == [] and read_all(store, 0x40) == b"newer"
    store.move(0x40, 3, COLD)
    assert store.delete(0x40, 3) is True
    assert files_under(root / "cold") == [] and store.get(0x40) is None


def test_reads_started_before_a_move_finish(store):
    data = text(3 * FRAME + 77, 41)
    put(store, 0x41, data)
    for target in (COLD, HOT, COLD):
        pieces = store.read(0x41)
        got = bytearray(next(pieces))
        store.move(0x41, 1, target)
        for piece in pieces:
            got += piece
        assert bytes(got) == data
    assert store.corrupt() == {}


def test_concurrent_reads_while_moving_back_and_forth(store):
    data = text(2 * FRAME + 5, 42)
    put(store, 0x42, data)
    errors, stop = [], threading.Event()

    def reader() -> None:
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            offset = rng.randrange(len(data))
            length = rng.randrange(len(data) - offset + 1)
            try:
                if read_all(store, 0x42, offset=offset, length=length) != \
                        data[offset:offset + length]:
                    errors.append(("wrong bytes", offset, length))
            except Exception as err:          # pragma: no cover - reported below
                errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            store.move(0x42, 1, COLD if i % 2 == 0 else HOT)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and store.corrupt() == {}


def test_concurrent_moves_of_one_chunk_agree(store, root):
    data = text(4 * FRAME, 43)
    put(store, 0x43, data)
    results, errors = [], []

    def mover() -> None:
        try:
            results.append(store.move(0x43, 1, COLD))
        except Exception as err:          # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and {m.tier for m in results} == {COLD}
    assert files_under(root / "cold") == ["0000000000000043-1.sums", "0000000000000043-1.zst"]
    assert files_under(root / "hot") == [] and read_all(store, 0x43) == data


def test_a_chunk_replaced_during_its_move_is_not_moved(store, root, monkeypatch):
    data = text(FRAME, 44)
    put(store, 0x44, data)
    real = store._encode_cold

    def racing(src, out):
        size = real(src, out)
        put(store, 0x44, b"newer", version=2)          # a newer version arrives meanwhile
        return size

    monkeypatch.setattr(store, "_encode_cold", racing)
    with pytest.raises(FailedPrecondition, match="replaced or deleted"):
        store.move(0x44, 1, COLD)
    assert (store.get(0x44).version, store.get(0x44).tier) == (2, HOT)
    assert files_under(root / "cold") == []


# -- scrubber ----------------------------------------------------------------------------------


def test_the_scrubber_verifies_cold_chunks(store, root):
    good, bad = text(2 * FRAME, 50), text(2 * FRAME, 51)
    cold_chunk(store, 0x50, good)
    cold_chunk(store, 0x51, bad)
    put(store, 0x52, noise(BS, 52))
    offset, size, _ = frame_index(store, 0x51).frames[1]
    flip_bit(path(root, "cold", 0x51, 1, "zst"), offset + size // 2)
    pokes = []
    scrub = Scrubber(store, 1 << 40, 3600, on_corrupt=lambda: pokes.append(1))
    assert scrub.run_pass() == 1
    assert store.corrupt() == {0x51: 1} and pokes
    assert scrub.stats()["scrubbed_bytes"] >= len(good) + FRAME + BS
    assert scrub.run_pass() == 0                          # marked replicas are skipped


# -- gRPC and heartbeats -----------------------------------------------------------------------


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "node")
    yield n
    n.stop()


@pytest.fixture
def channels():
    ch = daemon_channels()
    yield ch
    ch.close()


def test_move_chunk_over_grpc(node, channels, tmp_path):
    data = text(3 * FRAME + 11, 60)
    put(node.store, 0x60, data, version=2)
    stub = channels.stub(node.address)
    resp = stub.MoveChunk(cpb.MoveRequest(handle=0x60, version=2, tier="cold"), timeout=30)
    assert resp.tier == "cold" and 0 < resp.stored_bytes < len(data) // 2
    assert node.store.get(0x60).tier == COLD and node.changes == 1
    again = stub.MoveChunk(cpb.MoveRequest(handle=0x60, version=0, tier="cold"), timeout=30)
    assert (again.tier, again.stored_bytes) == ("cold", resp.stored_bytes)
    assert node.changes == 1                                   # nothing moved: no poke

    got = bytearray()                                           # a client range read from cold
    read_chunk(channels, 0x60, 2, [node.address], len(data), checksum_of(data),
               FRAME - 5, FRAME + 10, got.extend)
    assert bytes(got) == data[FRAME - 5:2 * FRAME + 5]
    got.clear()
    read_chunk(channels, 0x60, 2, [node.address], len(data), checksum_of(data), 0, len(data),
               got.extend)
    assert bytes(got) == data

    status = stub.Status(cpb.StatusRequest(), timeout=10)
    tiers = {t.name: t for t in status.tiers}
    assert (tiers["cold"].chunk_count, tiers["cold"].logical_bytes) == (1, len(data))
    assert tiers["cold"].stored_bytes == resp.stored_bytes and tiers["hot"].chunk_count == 0
    assert tiers["cold"].capacity_bytes >= tiers["cold"].free_bytes > 0

    for req, code in [(cpb.MoveRequest(handle=0x60, version=2, tier="tape"),
                       grpc.StatusCode.INVALID_ARGUMENT),
                      (cpb.MoveRequest(handle=0x60, version=2, tier=""),
                       grpc.StatusCode.INVALID_ARGUMENT),
                      (cpb.MoveRequest(handle=0x61, version=1, tier="hot"),
                       grpc.StatusCode.NOT_FOUND),
                      (cpb.MoveRequest(handle=0x60, version=1, tier="hot"),
                       grpc.StatusCode.FAILED_PRECONDITION)]:
        with pytest.raises(grpc.RpcError) as err:
            stub.MoveChunk(req, timeout=10)
        assert err.value.code() == code

    offset, _, _ = frame_index(node.store, 0x60).frames[2]
    flip_bit(node.store.data_path(node.store.get(0x60)), offset + 30)
    with pytest.raises(grpc.RpcError) as err:
        stub.MoveChunk(cpb.MoveRequest(handle=0x60, version=2, tier="hot"), timeout=30)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert node.store.get(0x60).tier == COLD and node.store.corrupt() == {0x60: 2}


def test_copy_onto_a_cold_replica(node, channels, tmp_path):
    source = Node(tmp_path / "source")
    try:
        data = text(FRAME + 3, 61)
        put(source.store, 0x61, data)
        source.store.move(0x61, 1, COLD)                        # served from cold
        cold_chunk(node.store, 0x61, data)
        req = cpb.CopyRequest(handle=0x61, version=1, sources=[source.address],
                              length=len(data), checksum=checksum_of(data))
        channels.stub(node.address).CopyChunk(req, timeout=30)  # healthy: answered at once
        assert node.store.get(0x61).tier == COLD and node.changes == 0
        node.store.mark_corrupt(0x61, 1, "test")
        channels.stub(node.address).CopyChunk(req, timeout=30)  # repair: lands hot
        assert node.store.get(0x61).tier == HOT and node.store.corrupt() == {}
        assert read_all(node.store, 0x61) == data
    finally:
        source.stop()


class FakeMasterClient:
    leader = "m1:1"

    def __init__(self):
        self.requests = []

    def call(self, method, request):
        self.requests.append(request)
        return pb.HeartbeatResponse()

    def learn_masters(self, addresses):
        self.learned = list(addresses)

    def close(self):
        pass


def test_heartbeats_report_tiers(store):
    put(store, 1, text(FRAME, 70))
    put(store, 2, b"two")
    hb = Heartbeater(store, "cs:1", "r1", ["127.0.0.1:1"], daemon_auth=DaemonAuth(CLUSTER_SECRET))
    hb.client.close()
    hb.client = FakeMasterClient()
    store.move(1, 1, COLD)
    hb.beat()
    first = hb.client.requests[-1]
    assert first.full_report
    assert [(r.handle, r.version, r.length, r.tier) for r in first.added] == \
        [(1, 1, FRAME, "cold"), (2, 1, 3, "hot")]
    tiers = {t.name: t for t in first.tiers}
    assert [t.name for t in first.tiers] == ["hot", "cold"]
    assert (tiers["cold"].chunk_count, tiers["cold"].logical_bytes) == (1, FRAME)
    assert tiers["cold"].stored_bytes == store.get(1).stored_bytes < FRAME
    assert (tiers["hot"].chunk_count, tiers["hot"].stored_bytes) == (1, 3)

    store.move(1, 1, HOT)                       # a tier change is re-reported as added only
    store.move(2, 1, COLD)
    hb.beat()
    second = hb.client.requests[-1]
    assert not second.full_report and list(second.removed) == []
    assert sorted((r.handle, r.tier) for r in second.added) == [(1, "hot"), (2, "cold")]
    hb.beat()
    assert list(hb.client.requests[-1].added) == []
    store.delete(2)
    hb.beat()
    assert [(r.handle, r.version) for r in hb.client.requests[-1].removed] == [(2, 1)]


def test_a_full_disk_during_a_move_is_resource_exhausted(node, channels, monkeypatch):
    put(node.store, 0x62, text(FRAME, 62))

    def full(*args, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(node.store, "move", full)
    with pytest.raises(grpc.RpcError) as err:
        channels.stub(node.address).MoveChunk(cpb.MoveRequest(handle=0x62, tier="cold"),
                                              timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "No space left" in err.value.details()
