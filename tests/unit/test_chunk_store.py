"""ChunkStore: round trips, range reads, corruption, atomic publication, recovery, concurrency."""
from __future__ import annotations

import hashlib
import itertools
import os
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkserver.store import HEADER_SIZE, ChunkStore
from chunkfiles import files_under, flip_bit
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer
from gfs.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound

BS = BLOCK_SIZE
LENGTHS = [0, 1, BS - 1, BS, BS + 1, 3 * BS + 17]
ODD_PIECES = [1, 7, 4099, BS + 3, 100_003]


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_chunk(store: ChunkStore, handle: int, data: bytes, version: int = 1,
                pieces: list[int] = ODD_PIECES, **expect):
    w = store.begin_write(handle, version)
    pos = 0
    for size in itertools.cycle(pieces):
        if pos >= len(data):
            break
        w.write(memoryview(data)[pos:pos + size] if size % 2 else data[pos:pos + size])
        pos += size
    return w.commit(**expect)


def read_all(store: ChunkStore, handle: int, **kw) -> bytes:
    return b"".join(store.read(handle, **kw))


def checksum_of(data: bytes) -> int:
    summer = ChunkChecksummer()
    summer.update(data)
    return summer.finish()




def chunk_path(root, handle: int, version: int, kind: str):
    return root / "hot" / f"{handle & 0xFF:02x}" / f"{handle:016x}-{version}.{kind}"


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cs"


@pytest.fixture
def store(root):
    return ChunkStore(str(root))


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
def test_round_trip(store, length):
    data = random_bytes(length, seed=length)
    meta = write_chunk(store, 0x1234, data)
    assert (meta.handle, meta.version, meta.length) == (0x1234, 1, length)
    assert meta.checksum == checksum_of(data)
    assert store.get(0x1234) == meta
    pieces = list(store.read(0x1234))
    assert all(0 < len(p) <= BS for p in pieces)
    assert digest(b"".join(pieces)) == digest(data)
    assert store.verify(0x1234) is True


def test_expected_length_and_checksum_accepted_when_right(store):
    data = random_bytes(BS * 2 + 5)
    meta = write_chunk(store, 7, data, expected_length=len(data),
                       expected_checksum=checksum_of(data))
    assert read_all(store, 7) == data and meta.length == len(data)


def test_files_on_disk_follow_the_layout(store, root):
    write_chunk(store, 0xABCDEF, b"x" * 10, version=3)
    assert files_under(root / "hot" / "ef") == ["0000000000abcdef-3.chunk",
                                                "0000000000abcdef-3.sums"]
    assert os.path.getsize(chunk_path(root, 0xABCDEF, 3, "sums")) == HEADER_SIZE + 8
    assert files_under(root / "tmp") == []


# -- range reads -------------------------------------------------------------------------------


def test_range_reads_match_slicing(store):
    data = random_bytes(3 * BS + 17, seed=1)
    write_chunk(store, 5, data)
    points = sorted({0, 1, BS - 1, BS, BS + 1, 2 * BS - 1, 2 * BS, 3 * BS, 3 * BS + 16,
                     len(data) - 1, len(data)})
    lengths = [0, 1, 2, 17, BS - 1, BS, BS + 1, 2 * BS + 1, -1]
    checked = 0
    for offset in points:
        for length in lengths + [len(data) - offset]:
            if length != -1 and offset + length > len(data):
                continue
            want = data[offset:] if length == -1 else data[offset:offset + length]
            pieces = list(store.read(5, offset, length))
            assert all(0 < len(p) <= BS for p in pieces)
            assert b"".join(pieces) == want, (offset, length)
            checked += 1
    assert checked > 80


@pytest.mark.parametrize("offset, length", [(3 * BS + 18, 0), (3 * BS + 18, -1), (0, 3 * BS + 18),
                                            (BS, 2 * BS + 18), (-1, 1), (0, -2)])
def test_out_of_range_is_invalid_argument(store, offset, length):
    write_chunk(store, 5, random_bytes(3 * BS + 17))
    with pytest.raises(InvalidArgument):
        store.read(5, offset, length)        # raised by the call, before iterating


@pytest.mark.parametrize("size", [0, 10, BS])
def test_reading_at_the_end_returns_nothing(store, size):
    write_chunk(store, 9, random_bytes(size))
    assert list(store.read(9, size, 0)) == []
    assert list(store.read(9, size, -1)) == []
    assert list(store.read(9, 0, 0)) == []


def test_missing_chunk_is_not_found_at_call_time(store):
    with pytest.raises(NotFound):
        store.read(42)
    with pytest.raises(NotFound):
        store.verify(42)
    assert store.get(42) is None


# -- corruption --------------------------------------------------------------------------------


def test_bit_flip_in_data_fails_only_that_block(store, root):
    data = random_bytes(3 * BS + 17, seed=2)
    write_chunk(store, 0xBEEF, data)
    flip_bit(chunk_path(root, 0xBEEF, 1, "chunk"), BS + 1234)

    with pytest.raises(DataLoss, match=r"000000000000beef.*block 1"):
        read_all(store, 0xBEEF, offset=BS + 1000, length=10)
    assert read_all(store, 0xBEEF, offset=0, length=BS) == data[:BS]
    assert read_all(store, 0xBEEF, offset=2 * BS) == data[2 * BS:]

    received = []
    with pytest.raises(DataLoss):
        for piece in store.read(0xBEEF):
            received.append(piece)
    assert b"".join(received) == data[:BS]           # nothing of the damaged block leaked
    assert store.verify(0xBEEF) is False


def test_spans_read_into_one_buffer_are_the_same_spans(store, root):
    """read_spans(into=buffer): the same spans and sums as fresh buffers, each span in the
    caller's buffer (sent before the next is read); a bad block still ends the read after the
    intact blocks before it."""
    from chunkserver.store import SPAN_BYTES
    data = random_bytes(40 * BS + 17, seed=5)          # three spans, the last one short
    write_chunk(store, 0xCAFE, data)
    buffer = bytearray(SPAN_BYTES)
    fresh = [(at, bytes(span), sums) for at, span, sums in store.read_spans(0xCAFE)[1]]
    reused = []
    for at, span, sums in store.read_spans(0xCAFE, into=buffer)[1]:
        assert span.obj is buffer
        reused.append((at, bytes(span), sums))
    assert reused == fresh and b"".join(s for _, s, _ in reused) == data
    flip_bit(chunk_path(root, 0xCAFE, 1, "chunk"), 20 * BS + 5)
    received = []
    with pytest.raises(DataLoss):
        for at, span, _ in store.read_spans(0xCAFE, BS, into=buffer)[1]:
            received.append(bytes(span))
    assert b"".join(received) == data[BS:20 * BS]
    with pytest.raises(ValueError, match="read buffer"):
        store.read_spans(0xCAFE, into=bytearray(BS))


def test_truncated_data_file_is_data_loss(store, root):
    write_chunk(store, 3, random_bytes(2 * BS))
    os.truncate(chunk_path(root, 3, 1, "chunk"), BS)
    with pytest.raises(DataLoss, match="data file has"):
        store.read(3)
    assert store.verify(3) is False


@pytest.mark.parametrize("size", [0, BS, 2 * BS + 1])
def test_a_data_file_of_the_wrong_size_is_marked_corrupt_at_start(root, size):
    store = ChunkStore(str(root))
    data = random_bytes(2 * BS, seed=5)
    write_chunk(store, 3, data)
    write_chunk(store, 4, data)
    os.truncate(chunk_path(root, 3, 1, "chunk"), size)
    again = ChunkStore(str(root))
    assert again.corrupt() == {3: 1}                      # known before anything reads it
    assert chunk_path(root, 3, 1, "bad").exists()
    assert read_all(again, 4) == data                     # its neighbour is untouched


@pytest.mark.parametrize("offset", [0, 6, 9, 14, 22, 30, HEADER_SIZE + 3, HEADER_SIZE + 8 * 2 + 7])
def test_bit_flip_in_sidecar_is_detected(store, root, offset):
    data = random_bytes(3 * BS + 17, seed=3)
    write_chunk(store, 11, data)
    flip_bit(chunk_path(root, 11, 1, "sums"), offset)
    with pytest.raises(DataLoss, match="sidecar"):
        store.read(11, 0, 1)                 # even a read of an intact block refuses
    assert store.verify(11) is False


def test_damaged_sidecar_header_is_not_loaded_on_reopen(root):
    store = ChunkStore(str(root))
    write_chunk(store, 11, b"hello")
    flip_bit(chunk_path(root, 11, 1, "sums"), 13)
    again = ChunkStore(str(root))
    assert again.get(11) is None
    assert chunk_path(root, 11, 1, "chunk").exists()     # left for inspection


# -- atomic publication ------------------------------------------------------------------------


@pytest.mark.parametrize("expect", [{"expected_checksum": 12345},
                                    {"expected_length": 3 * BS}])
def test_commit_with_wrong_expectation_leaves_nothing(store, root, expect):
    data = random_bytes(3 * BS + 17, seed=4)
    with pytest.raises(DataLoss):
        write_chunk(store, 21, data, **expect)
    assert store.get(21) is None and store.chunks() == []
    with pytest.raises(NotFound):
        store.read(21)
    assert files_under(root) == []


def test_uncommitted_writer_is_invisible_and_cleaned_on_reopen(store, root):
    w = store.begin_write(31, 1)
    w.write(random_bytes(BS + 5))
    assert store.get(31) is None and store.chunks() == []
    with pytest.raises(NotFound):
        store.read(31)
    assert files_under(root / "tmp") != []
    assert files_under(root / "hot") == []

    again = ChunkStore(str(root))                  # as after a crash: the writer never finished
    assert files_under(root / "tmp") == []
    assert again.chunks() == []
    w.abort()                                      # only to close the file descriptor


def test_abort_and_context_manager_remove_temp_files(store, root):
    w = store.begin_write(1, 1)
    w.write(b"abc")
    w.abort()
    w.abort()
    with store.begin_write(2, 1) as w2:
        w2.write(b"abc")
    assert files_under(root) == []
    with pytest.raises(FailedPrecondition):
        w.write(b"more")
    with pytest.raises(FailedPrecondition):
        w2.commit()


@pytest.mark.parametrize("cold", ["", "hot", "hot/00", "tmp", ".."])
def test_cold_dir_overlapping_the_data_dir_is_refused(root, cold):
    with pytest.raises(InvalidArgument, match="overlaps"):
        ChunkStore(str(root), cold_dir=str(root / cold) if cold else str(root))


# -- index and versions ------------------------------------------------------------------------


def test_reopen_rebuilds_the_index(store, root):
    handles = (1, 2, 255, 256, 257, 2**64 - 1)
    chunks = {h: random_bytes(i * 30_000, seed=i) for i, h in enumerate(handles)}
    for h, data in chunks.items():
        write_chunk(store, h, data, version=h % 5)
    before = store.chunks()
    again = ChunkStore(str(root))
    assert again.chunks() == before
    assert [m.handle for m in before] == sorted(chunks)
    for h, data in chunks.items():
        assert read_all(again, h) == data


def test_version_2_replaces_version_1(store, root):
    write_chunk(store, 77, b"one" * 1000)
    meta = write_chunk(store, 77, b"two" * 999, version=2)
    assert store.get(77) == meta and meta.version == 2
    assert files_under(root / "hot") == ["000000000000004d-2.chunk", "000000000000004d-2.sums"]
    assert read_all(store, 77) == b"two" * 999
    assert ChunkStore(str(root)).get(77) == meta


def test_rewriting_the_same_version_replaces_the_content(store, root):
    write_chunk(store, 78, b"old" * 1000, version=4)
    write_chunk(store, 78, b"new" * 10, version=4)
    assert read_all(store, 78, version=4) == b"new" * 10
    assert ChunkStore(str(root)).verify(78)


def test_wrong_version_fails(store):
    write_chunk(store, 88, b"data", version=3)
    with pytest.raises(FailedPrecondition, match="stored version is 3"):
        store.read(88, version=2)
    with pytest.raises(FailedPrecondition, match="stored version is 3"):
        store.read(88, version=4)
    assert read_all(store, 88, version=3) == b"data"
    with pytest.raises(FailedPrecondition, match="version 3 is stored"):
        store.begin_write(88, 2)


def test_older_version_committed_late_is_refused(store, root):
    stale = store.begin_write(89, 1)
    stale.write(b"stale")
    write_chunk(store, 89, b"fresh", version=2)
    with pytest.raises(FailedPrecondition):
        stale.commit()
    assert read_all(store, 89) == b"fresh"
    assert files_under(root / "tmp") == []


def test_delete(store, root):
    write_chunk(store, 99, b"x" * 100, version=2)
    assert store.delete(99, version=1) is False
    assert store.delete(99, version=2) is True
    assert store.delete(99) is False
    assert store.get(99) is None and files_under(root) == []


def test_usage(store):
    write_chunk(store, 1, b"a" * 1000)
    write_chunk(store, 2, b"b" * 24)
    u = store.usage()
    assert (u["used_bytes"], u["chunk_count"]) == (1024, 2)
    assert 0 <= u["free_bytes"] <= u["capacity_bytes"] and u["capacity_bytes"] > 0


def test_max_chunk_size(root):
    store = ChunkStore(str(root), max_chunk_size=100)
    w = store.begin_write(1, 1)
    w.write(b"a" * 60)
    with pytest.raises(InvalidArgument, match="maximum chunk size"):
        w.write(b"b" * 41)
    w.write(b"c" * 40)
    assert w.commit().length == 100
    assert read_all(store, 1) == b"a" * 60 + b"c" * 40


@pytest.mark.parametrize("handle, version", [(-1, 1), (2**64, 1), (1, -1), (True, 1), ("1", 1)])
def test_bad_handle_or_version(store, handle, version):
    with pytest.raises(InvalidArgument):
        store.begin_write(handle, version)


# -- crash recovery ----------------------------------------------------------------------------


def test_reopen_drops_unpublished_data_and_superseded_versions(store, root):
    write_chunk(store, 5, b"v1" * 100, version=1)
    v1_chunk, v1_sums = (chunk_path(root, 5, 1, k).read_bytes() for k in ("chunk", "sums"))
    write_chunk(store, 5, b"v2" * 100, version=2)
    chunk_path(root, 5, 1, "chunk").write_bytes(v1_chunk)     # crash before v1 was removed
    chunk_path(root, 5, 1, "sums").write_bytes(v1_sums)
    chunk_path(root, 5, 3, "chunk").write_bytes(b"v3")        # crash between the two renames
    again = ChunkStore(str(root))
    assert again.get(5).version == 2
    assert files_under(root / "hot") == ["0000000000000005-2.chunk", "0000000000000005-2.sums"]


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_writers(store):
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(4):
                handle = t * 100 + i
                write_chunk(store, handle, random_bytes(BS + t * 1000 + i, seed=handle),
                            pieces=[1000 + t])
        except Exception as e:       # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.chunks()) == 32
    for t in range(8):
        for i in range(4):
            handle = t * 100 + i
            assert read_all(store, handle) == random_bytes(BS + t * 1000 + i, seed=handle)


# -- corrupt marks -----------------------------------------------------------------------------


def marker_path(root, handle: int, version: int):
    return chunk_path(root, handle, version, "bad")


def test_mark_corrupt_is_recorded_and_persisted(store, root):
    data = random_bytes(2 * BS + 3, seed=20)
    write_chunk(store, 0x51, data, version=2)
    heard = []
    store.on_corrupt = lambda h, v, why: heard.append((h, v, why))
    assert store.mark_corrupt(0x51, 1, "wrong version") is False      # not the stored version
    assert store.mark_corrupt(0x52, 2, "not here") is False
    assert store.corrupt() == {} and not marker_path(root, 0x51, 2).exists()

    assert store.mark_corrupt(0x51, 2, "reader saw a bad block") is True
    assert store.mark_corrupt(0x51, 2, "again") is True                # idempotent
    assert heard == [(0x51, 2, "reader saw a bad block")]              # announced once
    assert store.corrupt() == {0x51: 2}
    assert store.is_corrupt(0x51) and store.is_corrupt(0x51, 2) and not store.is_corrupt(0x51, 1)
    assert [m.handle for m in store.chunks()] == [0x51]               # still held
    assert "reader saw a bad block" in marker_path(root, 0x51, 2).read_text()
    assert read_all(store, 0x51) == data                               # still readable

    again = ChunkStore(str(root))
    assert again.corrupt() == {0x51: 2}
    assert read_all(again, 0x51) == data


def test_marker_without_its_chunk_is_removed_on_reopen(store, root):
    write_chunk(store, 0x60, b"a" * 100, version=3)
    store.mark_corrupt(0x60, 3, "test")
    marker_path(root, 0x61, 1).write_text("orphan")                    # no chunk at all
    marker_path(root, 0x60, 2).write_text("older version")             # superseded version
    again = ChunkStore(str(root))
    assert again.corrupt() == {0x60: 3}
    assert files_under(root / "hot") == ["0000000000000060-3.bad", "0000000000000060-3.chunk",
                                         "0000000000000060-3.sums"]


def test_mark_is_cleared_by_republishing_the_same_version(store, root):
    data = random_bytes(3 * BS, seed=21)
    write_chunk(store, 0x70, data, version=4)
    flip_bit(chunk_path(root, 0x70, 4, "chunk"), 2 * BS + 5)
    assert store.verify(0x70) is False
    assert store.corrupt() == {0x70: 4} and marker_path(root, 0x70, 4).exists()
    write_chunk(store, 0x70, data, version=4)                          # repair in place
    assert store.corrupt() == {} and not marker_path(root, 0x70, 4).exists()
    assert store.verify(0x70) is True
    assert ChunkStore(str(root)).corrupt() == {}


def test_mark_is_cleared_by_a_newer_version_and_by_delete(store, root):
    write_chunk(store, 0x80, b"old" * 100, version=1)
    store.mark_corrupt(0x80, 1, "test")
    write_chunk(store, 0x80, b"new" * 100, version=2)
    assert store.corrupt() == {}
    assert files_under(root / "hot") == ["0000000000000080-2.chunk", "0000000000000080-2.sums"]

    store.mark_corrupt(0x80, 2, "test")
    assert store.delete(0x80, version=1) is False and store.corrupt() == {0x80: 2}
    assert store.delete(0x80, version=2) is True
    assert store.corrupt() == {} and files_under(root) == []
    assert ChunkStore(str(root)).corrupt() == {}


def test_a_bad_block_marks_the_chunk_and_good_blocks_stay_readable(store, root):
    data = random_bytes(4 * BS + 9, seed=22)
    write_chunk(store, 0x90, data, version=5)
    flip_bit(chunk_path(root, 0x90, 5, "chunk"), 2 * BS + 77)
    assert read_all(store, 0x90, offset=0, length=2 * BS) == data[:2 * BS]   # not touched yet
    assert store.corrupt() == {}
    with pytest.raises(DataLoss, match="block 2"):
        read_all(store, 0x90)
    assert store.corrupt() == {0x90: 5}
    assert "block 2" in marker_path(root, 0x90, 5).read_text()
    # Marked, yet intact blocks are still served (verified) and the bad one still refused.
    assert read_all(store, 0x90, offset=0, length=2 * BS) == data[:2 * BS]
    assert read_all(store, 0x90, offset=3 * BS) == data[3 * BS:]
    with pytest.raises(DataLoss):
        read_all(store, 0x90, offset=2 * BS, length=1)
    assert ChunkStore(str(root)).corrupt() == {0x90: 5}


@pytest.mark.parametrize("damage", ["sidecar bit", "sidecar gone", "truncated", "grown",
                                    "data gone"])
def test_file_damage_marks_the_chunk(store, root, damage):
    write_chunk(store, 0xA0, random_bytes(3 * BS + 1, seed=23), version=6)
    sums, chunk = chunk_path(root, 0xA0, 6, "sums"), chunk_path(root, 0xA0, 6, "chunk")
    if damage == "sidecar bit":
        flip_bit(sums, HEADER_SIZE + 8 + 2)
    elif damage == "sidecar gone":
        os.unlink(sums)
    elif damage == "truncated":
        os.truncate(chunk, 2 * BS)
    elif damage == "grown":
        with open(chunk, "ab") as f:
            f.write(b"x")
    else:
        os.unlink(chunk)
    with pytest.raises(DataLoss):
        store.read(0xA0, 0, 1)
    assert store.corrupt() == {0xA0: 6}
    assert marker_path(root, 0xA0, 6).exists()
    assert [m.handle for m in store.chunks()] == [0xA0]


def test_a_stale_read_does_not_mark_the_replica_that_replaced_it(store, root):
    data = random_bytes(2 * BS, seed=24)
    write_chunk(store, 0xB0, data, version=1)
    flip_bit(chunk_path(root, 0xB0, 1, "chunk"), BS + 1)
    pieces = store.read(0xB0)                  # files opened: the damaged replica
    assert next(pieces) == data[:BS]
    write_chunk(store, 0xB0, data, version=1)  # repaired meanwhile (same version)
    with pytest.raises(DataLoss):
        next(pieces)                           # the old open file is still damaged...
    assert store.corrupt() == {}               # ...but the replica now stored is not marked
    assert store.verify(0xB0) is True


# -- property ----------------------------------------------------------------------------------

PROP_DATA = random_bytes(4 * BS + 333, seed=9)


@pytest.fixture(scope="module")
def prop_store(tmp_path_factory):
    store = ChunkStore(str(tmp_path_factory.mktemp("prop")))
    write_chunk(store, 1, PROP_DATA)
    return store


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_range_reads_match_slicing(prop_store, data):
    offset = data.draw(st.integers(0, len(PROP_DATA)), label="offset")
    length = data.draw(st.one_of(st.just(-1), st.integers(0, len(PROP_DATA) - offset)),
                       label="length")
    want = PROP_DATA[offset:] if length == -1 else PROP_DATA[offset:offset + length]
    assert read_all(prop_store, 1, offset=offset, length=length) == want


# --- capacity ------------------------------------------------------------------------------------

def test_a_capacity_refuses_writes_beyond_it_and_keeps_what_is_stored(tmp_path):
    from gfs.errors import ResourceExhausted
    cap = 3 * BS
    store = ChunkStore(str(tmp_path), capacity=cap)
    first = random_bytes(2 * BS, 1)
    write_chunk(store, 1, first)
    u = store.usage()
    assert u["capacity_bytes"] == cap and u["free_bytes"] == BS
    w = store.begin_write(2, 1)
    w.write(random_bytes(BS, 2))                     # exactly fills it: fine
    with pytest.raises(ResourceExhausted, match="no room"):
        w.write(b"x")                                # one byte more: refused
    w.abort()
    assert store.free_bytes() == BS                  # the aborted writer's bytes are released
    assert [m.handle for m in store.chunks()] == [1] and read_all(store, 1) == first
    assert files_under(store.tmp_dir) == []


def copy_in(store: ChunkStore, handle: int, data: bytes, version: int = 1) -> None:
    """Store `data` as a repair copy would (CopyChunk: may use the repair reserve)."""
    w = store.begin_write(handle, version, repair=True)
    w.write(data)
    w.commit(expected_length=len(data))


def test_new_chunks_leave_the_repair_reserve_to_repair_copies(tmp_path):
    from gfs.errors import ResourceExhausted
    from gfs.space import repair_reserve
    cap = 100 * BS
    assert repair_reserve(cap) == 2 * BS                 # 2 % of the capacity, whole blocks
    assert repair_reserve(3 * BS) == 0                   # too small for a whole block
    store = ChunkStore(str(tmp_path), capacity=cap)
    write_chunk(store, 1, random_bytes(98 * BS, 1))      # up to the reserve: fine
    w = store.begin_write(2, 1)
    with pytest.raises(ResourceExhausted, match=f"{2 * BS} of it kept for repair copies"):
        w.write(b"x")                                    # a new chunk may not take the reserve
    w.abort()
    copy_in(store, 3, random_bytes(2 * BS, 3))           # a repair copy may: now exactly full
    assert store.free_bytes() == 0
    w = store.begin_write(4, 1, repair=True)
    with pytest.raises(ResourceExhausted, match="no room"):
        w.write(b"x")                                    # but not beyond the capacity
    w.abort()
    assert read_all(store, 3) == random_bytes(2 * BS, 3)


def test_a_full_server_rebuilds_a_corrupt_replica_in_place(tmp_path):
    cap = 4 * BS
    store = ChunkStore(str(tmp_path), capacity=cap)
    data = random_bytes(2 * BS, 5)
    copy_in(store, 1, data)
    copy_in(store, 2, random_bytes(2 * BS, 6))
    assert store.free_bytes() == 0
    store.mark_corrupt(1, 1, "test")
    copy_in(store, 1, data)                  # the new copy may use the room of the one it replaces
    assert not store.is_corrupt(1, 1) and read_all(store, 1) == data
    assert store.free_bytes() == 0 and files_under(store.tmp_dir) == []


def test_a_capacity_counts_stored_bytes_across_restarts_deletes_and_cold_moves(tmp_path):
    text = (b"the quick brown fox jumps over the lazy dog\n" * 5000)[:3 * BS]
    store = ChunkStore(str(tmp_path), capacity=8 * BS)
    write_chunk(store, 1, text)
    write_chunk(store, 2, random_bytes(2 * BS, 3))
    assert store.free_bytes() == 3 * BS
    store.move(1, None, "cold")                       # compressed: frees most of its room
    assert store.free_bytes() > 5 * BS
    reopened = ChunkStore(str(tmp_path), capacity=8 * BS)
    assert reopened.free_bytes() == store.free_bytes()
    reopened.delete(2)
    assert reopened.free_bytes() == 8 * BS - reopened.get(1).stored_bytes
    unlimited = ChunkStore(str(tmp_path))
    assert unlimited.usage()["capacity_bytes"] == os.statvfs(str(tmp_path)).f_blocks * \
        os.statvfs(str(tmp_path)).f_frsize
