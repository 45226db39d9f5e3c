"""The mount's streamed uploads (gfs/mount/streaming.py, WriteHandle): a file written in order
is read by the put while it is written; anything else falls back to putting the spool whole.
The client here is a stand-in that reads an UploadSource the way Client.put does (chunk by
chunk, each chunk's pieces in order) — the end-to-end tests with a real mount are in
tests/integration/test_mount.py."""
from __future__ import annotations

import os
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest

from gfs.client import ChunkInfo, UploadSource
from gfs.errors import DataLoss, NotFound, Unauthenticated, Unavailable
from gfs.mount.handles import WriteHandle
from gfs.mount.streaming import Abandoned, GrowingSpool

CHUNK = 1 << 20


def read_source(source: UploadSource, chunk_size: int = CHUNK) -> bytes:
    """All bytes of a source, read as Client.put reads them."""
    out, index = [], 0
    while (pieces := source.chunk(index, chunk_size)) is not None:
        out += list(pieces.open())
        index += 1
    return b"".join(out)


class RecordingClient:
    """Takes puts like Client.put: a streamed source is read to its end before it commits, each
    chunk declared `durable` once read (kept here, to be read back by `read_chunk`), and
    `before_abort` called when the put fails; `fail_streams` makes a streamed put fail once it
    has read everything, `lose_chunks` every read-back fail."""

    def __init__(self, fail_streams: bool = False):
        self.committed: list[tuple[str, bytes, bool]] = []
        self.fail_streams = fail_streams
        self.lose_chunks = False
        self.chunks: dict[int, bytes] = {}
        self.attrs: list[tuple] = []
        self.capability = b"cap-1"         # what read_chunk accepts; a new one "expires" it
        self.upload_chunks_asked = 0

    def put(self, source, path: str, *, overwrite: bool = False, mode: int = 0o644):
        streamed = isinstance(source, GrowingSpool)
        if not streamed:
            self.committed.append((path, source.read(), False))
            return
        try:
            data = self._stream(source)
            if self.fail_streams:
                raise Unavailable("the chain broke")
        except BaseException:
            source.before_abort()
            raise
        self.committed.append((path, data, True))

    def _stream(self, source: GrowingSpool) -> bytes:
        out, index = [], 0
        while (pieces := source.chunk(index, CHUNK)) is not None:
            data = b"".join(pieces.open())
            self._sent(pieces)
            handle = len(self.chunks) + 1
            self.chunks[handle] = data
            pieces.durable(ChunkInfo(handle, index, 1, len(data), 0, [],
                                     capability=self.capability), 7)
            out.append(data)
            index += 1
        return b"".join(out)

    def _sent(self, pieces) -> None:
        """A chunk's bytes were all read; it is declared durable after this returns."""

    def read_chunk(self, chunk: ChunkInfo, lo: int, hi: int, sink) -> None:
        if self.lose_chunks:
            raise Unavailable("no replica of the chunk answers")
        if chunk.capability != self.capability:
            raise Unauthenticated("capability expired")
        sink(memoryview(self.chunks[chunk.handle][lo:hi]))

    def upload_chunks(self, inode: int) -> list[ChunkInfo]:
        assert inode == 7
        self.upload_chunks_asked += 1
        if self.committed:                   # no longer a pending upload
            raise NotFound(f"inode {inode} is not a pending upload")
        return self._renewed()

    def stat(self, path: str, for_read: bool = False):
        assert for_read
        return SimpleNamespace(chunks=self._renewed())

    def _renewed(self) -> list[ChunkInfo]:
        return [ChunkInfo(h, i, 1, 0, 0, ["cs"], capability=self.capability)
                for i, h in enumerate(sorted(self.chunks))]

    def set_attr(self, path: str, **kw) -> None:
        self.attrs.append((path, kw))


def spool_with(data: bytes) -> tuple[GrowingSpool, int]:
    fd = os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR)
    os.pwrite(fd, data, 0)
    return GrowingSpool(fd, RecordingClient(), "/f"), fd


def test_a_chunk_waits_for_its_bytes_and_the_source_ends_at_finish():
    spool, fd = spool_with(b"")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_source(spool)))
    reader.start()
    written = 0
    for piece in (b"a" * 700_000, b"b" * 700_000, b"c" * 10):
        os.pwrite(fd, piece, written)
        written += len(piece)
        spool.wrote(written)
        time.sleep(0.05)
        assert reader.is_alive()             # never past what is written, never ended early
    spool.finish()
    reader.join(5)
    assert got == [b"a" * 700_000 + b"b" * 700_000 + b"c" * 10]
    os.close(fd)


def test_an_abandoned_spool_wakes_its_reader_with_abandoned():
    spool, fd = spool_with(b"x" * 100)
    spool.wrote(100)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            read_source(spool)
        except BaseException as err:         # noqa: BLE001
            errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.05)
    spool.abandon()
    reader.join(5)
    assert len(errors) == 1 and isinstance(errors[0], Abandoned)
    with pytest.raises(Abandoned):
        spool.chunk(0, CHUNK)
    os.close(fd)


def test_a_chunk_read_again_gives_the_same_bytes():
    spool, fd = spool_with(os.urandom(3 * CHUNK // 2))
    spool.wrote(3 * CHUNK // 2)
    spool.finish()
    second = spool.chunk(1, CHUNK)
    assert second is not None and second.repeatable
    assert b"".join(second.open()) == b"".join(second.open())
    assert len(b"".join(second.open())) == CHUNK // 2
    assert spool.chunk(2, CHUNK) is None
    os.close(fd)


def streaming_handle(client: RecordingClient, path: str = "/f") -> WriteHandle:
    """A handle of a new file that streams once CHUNK bytes are written in order."""
    return WriteHandle(path, 0o600, stream_with=client, stream_after=CHUNK)


def write_in_pieces(handle: WriteHandle, data: bytes, start: int = 0, piece: int = 65536) -> None:
    for pos in range(0, len(data), piece):
        handle.write(data[pos:pos + piece], start + pos)


def test_a_file_written_in_order_streams_and_commits_once_at_upload():
    client = RecordingClient()
    data = os.urandom(5 * CHUNK + 123)
    h = streaming_handle(client)
    write_in_pieces(h, data)
    assert h.streaming and client.committed == []       # nothing appears before close
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    h.upload(client)                                     # not dirty: nothing more
    assert len(client.committed) == 1
    h.close()


def test_a_small_file_does_not_stream():
    client = RecordingClient()
    h = streaming_handle(client)
    write_in_pieces(h, b"x" * (CHUNK - 1))
    assert not h.streaming
    h.upload(client)
    assert client.committed == [("/f", b"x" * (CHUNK - 1), False)]
    h.close()


def test_reading_the_file_being_written_leaves_the_stream_going():
    client, data = RecordingClient(), os.urandom(3 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data[:2 * CHUNK])
    out = memoryview(bytearray(16))
    assert h.read_into(out, 10) == 16 and bytes(out) == data[10:26]
    assert h.streaming
    write_in_pieces(h, data[2 * CHUNK:], 2 * CHUNK)
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    h.close()


@pytest.mark.parametrize("how", ["seek back", "hole", "truncate"])
def test_anything_but_an_append_falls_back_to_the_whole_spool(how):
    client = RecordingClient()
    data = bytearray(os.urandom(3 * CHUNK))
    h = streaming_handle(client)
    write_in_pieces(h, bytes(data[:2 * CHUNK]))
    assert h.streaming
    if how == "seek back":
        h.write(b"HEADER", 10)
        data[10:16] = b"HEADER"
    elif how == "hole":
        h.write(b"Z", 2 * CHUNK + 5)
        data = data[:2 * CHUNK] + bytes(5) + b"Z"
    else:
        h.truncate(CHUNK)
    assert not h.streaming
    if how == "truncate":
        tail = os.urandom(CHUNK)
        write_in_pieces(h, tail, CHUNK)
        data = data[:CHUNK] + tail
    elif how == "seek back":
        write_in_pieces(h, bytes(data[2 * CHUNK:]), 2 * CHUNK)
    h.upload(client)
    assert client.committed == [("/f", bytes(data), False)]
    h.close()


def test_a_failed_stream_is_put_whole_instead():
    client = RecordingClient(fail_streams=True)
    data = os.urandom(3 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data)
    assert h.streaming
    h.upload(client)
    assert client.committed == [("/f", data, False)]
    h.close()


def test_fsync_mid_stream_commits_what_is_written_and_close_the_rest():
    client = RecordingClient()
    data = os.urandom(4 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data[:2 * CHUNK])
    h.upload(client)                                     # fsync
    assert client.committed == [("/f", data[:2 * CHUNK], True)]
    write_in_pieces(h, data[2 * CHUNK:], 2 * CHUNK)
    assert h.streaming                                   # the appends stream again
    h.upload(client)                                     # close
    assert client.committed[-1] == ("/f", data, True)
    h.close()


def test_a_flush_before_the_first_write_leaves_the_appends_streaming():
    """`dd of=F` opens F, duplicates it onto its stdout and closes the first descriptor: a
    flush of the empty file before any write."""
    client = RecordingClient()
    data = os.urandom(3 * CHUNK)
    h = streaming_handle(client)
    h.upload(client)
    assert client.committed == [("/f", b"", False)]
    write_in_pieces(h, data)
    assert h.streaming
    h.upload(client)
    assert client.committed[-1] == ("/f", data, True)
    h.close()


def test_closing_without_upload_stops_the_stream_before_the_spool_goes():
    client = RecordingClient()
    h = streaming_handle(client)
    write_in_pieces(h, os.urandom(2 * CHUNK))
    stream = h._stream
    h.close()
    assert not stream._thread.is_alive()
    assert client.committed == []
    from gfs.mount import streaming
    assert streaming.hold_budget.used == 0               # what it held is given back


def test_only_so_many_files_stream_at_once_the_others_are_put_at_close():
    from gfs.mount import streaming
    client = RecordingClient()
    handles = [streaming_handle(client, f"/f{i}") for i in range(streaming.STREAMS_AT_ONCE + 1)]
    for h in handles:
        write_in_pieces(h, b"y" * (2 * CHUNK))
    assert [h.streaming for h in handles] == [True] * streaming.STREAMS_AT_ONCE + [False]
    for h in handles:
        h.upload(client)
        h.close()
    assert sorted(streamed for _, _, streamed in client.committed) == \
        [False] + [True] * streaming.STREAMS_AT_ONCE
    late = streaming_handle(client, "/late")
    write_in_pieces(late, b"z" * (2 * CHUNK))
    assert late.streaming                     # the finished streams gave their places back
    late.upload(client)
    late.close()


def wait_dropped(h: WriteHandle) -> None:
    """Until the handle's stream has dropped a durable chunk from the spool."""
    deadline = time.monotonic() + 10
    while not h._stream.source.has_dropped:
        assert time.monotonic() < deadline, "no chunk dropped from the spool"
        time.sleep(0.01)


def spool_blocks(h: WriteHandle) -> int:
    return os.fstat(h._file.fileno()).st_blocks * 512


def test_durable_chunks_leave_the_spool_and_the_committed_file_is_whole():
    client, data = RecordingClient(), os.urandom(6 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data)
    wait_dropped(h)
    assert spool_blocks(h) < len(data)         # holes where durable chunks were
    assert h.size == len(data)
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    h.close()


def test_a_read_of_dropped_bytes_reads_them_back_first():
    client, data = RecordingClient(), os.urandom(3 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data[:2 * CHUNK])
    wait_dropped(h)
    out = memoryview(bytearray(100))
    assert h.read_into(out, 1000) == 100 and bytes(out) == data[1000:1100]
    assert h.streaming                         # goes on, keeping its bytes from now on
    write_in_pieces(h, data[2 * CHUNK:], 2 * CHUNK)
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    h.close()


@pytest.mark.parametrize("expired", [False, True])
def test_a_write_back_into_dropped_bytes_lands_on_what_was_read_back(expired):
    """`expired`: the capabilities the chunks came with no longer read them; fresh ones come
    from the pending upload."""
    client, data = RecordingClient(), bytearray(os.urandom(3 * CHUNK))
    h = streaming_handle(client)
    write_in_pieces(h, bytes(data))
    wait_dropped(h)
    if expired:
        client.capability = b"cap-2"
    h.write(b"PATCH", 7)                       # a header patched after the fact
    data[7:12] = b"PATCH"
    assert client.upload_chunks_asked == (1 if expired else 0)
    assert not h.streaming
    h.upload(client)
    assert client.committed == [("/f", bytes(data), False)]
    h.close()


@pytest.mark.parametrize("expired", [False, True])
def test_appends_after_a_streamed_commit_read_the_dropped_bytes_back(expired):
    """`expired`: the chunks' capabilities no longer read them; the committed file's stat
    gives fresh ones."""
    client, data = RecordingClient(), os.urandom(5 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data[:3 * CHUNK])
    wait_dropped(h)
    h.upload(client)                           # fsync: committed, bytes dropped
    if expired:
        client.capability = b"cap-2"
    write_in_pieces(h, data[3 * CHUNK:], 3 * CHUNK)
    h.write(b"!", 0)                           # and out of order: the whole spool is put
    h.upload(client)
    assert client.committed[-1] == ("/f", b"!" + data[1:], False)
    h.close()


def test_bytes_that_cannot_be_read_back_fail_the_file_and_nothing_is_put():
    client, data = RecordingClient(), os.urandom(3 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data)
    wait_dropped(h)
    client.lose_chunks = True
    with pytest.raises(DataLoss):
        h.write(b"x", 5)
    with pytest.raises(DataLoss):
        h.write(b"y", len(data))               # every later use fails the same
    with pytest.raises(DataLoss):
        h.upload(client)
    assert client.committed == []
    h.close()


def test_a_failed_stream_reads_its_dropped_bytes_back_before_the_whole_put():
    client, data = RecordingClient(fail_streams=True), os.urandom(4 * CHUNK)
    h = streaming_handle(client)
    write_in_pieces(h, data)
    wait_dropped(h)
    h.upload(client)
    assert client.committed == [("/f", data, False)]
    h.close()



def test_pieces_are_at_most_a_piece_however_far_ahead_the_writer_is():
    from gfs.transfer import PIECE_SIZE
    spool, fd = spool_with(os.urandom(5 * PIECE_SIZE))
    spool.wrote(5 * PIECE_SIZE)
    spool.finish()
    pieces = list(spool.chunk(0, 8 * PIECE_SIZE).open())
    assert [len(p) for p in pieces] == [PIECE_SIZE] * 5
    os.close(fd)


def test_a_chunk_without_a_read_capability_stays_in_the_spool():
    """Masters older than the client (and the insecure mode) give no capability to read a
    chunk back: such chunks are never dropped."""
    client, data = RecordingClient(), os.urandom(4 * CHUNK)
    client.capability = b""
    h = streaming_handle(client)
    write_in_pieces(h, data)
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    assert spool_blocks(h) >= len(data)
    h.close()


def test_held_pieces_read_with_the_spool_filling_the_gaps():
    from gfs.mount.streaming import HoldBudget, _Held
    spool, fd = spool_with(bytes(range(256)) * 64)          # 16 KiB of known bytes
    budget = HoldBudget(1 << 20)
    held = _Held(budget)
    held.add(1000, b"A" * 100)
    held.add(1100, b"B" * 100)
    held.add(5000, b"C" * 10)                               # after a gap (spilled meanwhile)
    expected = bytearray(os.pread(fd, 16384, 0))
    expected[1000:1100], expected[1100:1200] = b"A" * 100, b"B" * 100
    expected[5000:5010] = b"C" * 10

    def spool_read(at, k):
        return os.pread(fd, k, at)

    for pos, n in [(0, 16384), (1000, 200), (1050, 100), (1190, 4000), (5005, 3), (10, 10)]:
        assert held.read(pos, n, spool_read) == bytes(expected[pos:pos + n]), (pos, n)
    held.spill(fd, 1150, 1200, inside_too=False)            # B reaches outside: written, forgotten
    assert [s for s, _ in held.pieces] == [1000, 5000] and os.pread(fd, 100, 1100) == b"B" * 100
    held.discard(0, 2000)
    assert [s for s, _ in held.pieces] == [5000] and held.bytes == 10 and budget.used == 10
    os.close(fd)


def test_appended_bytes_wait_in_memory_not_in_the_spool_until_durable():
    """The put below holds chunk 1's bytes back (it is slow): they are in memory, the spool
    has a hole there, and everything arrives whole."""
    client, data = RecordingClient(), os.urandom(4 * CHUNK)
    h = streaming_handle(client)
    gate = threading.Event()
    real = client._stream

    def slow(source):
        gate.wait(10)
        return real(source)
    client._stream = slow
    write_in_pieces(h, data)
    assert h.size == len(data)
    assert spool_blocks(h) < 2 * CHUNK                  # chunk 0 written before the stream began
    out = memoryview(bytearray(100))
    gate.set()
    assert h.read_into(out, 3 * CHUNK + 5) == 100 and bytes(out) == data[3 * CHUNK + 5:][:100]
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    h.close()


def test_the_mount_wide_hold_budget_sends_the_rest_to_the_spool_and_comes_back():
    from gfs.mount import streaming
    old = streaming.hold_budget.total
    streaming.set_hold_budget(CHUNK)                     # room for one piece of 1 MiB
    try:
        client, data = RecordingClient(), os.urandom(4 * CHUNK)
        h = streaming_handle(client)
        gate = threading.Event()
        real = client._stream
        client._stream = lambda source: gate.wait(10) and real(source)
        write_in_pieces(h, data, piece=CHUNK)
        assert streaming.hold_budget.used == CHUNK       # one held, the others in the spool
        assert spool_blocks(h) >= 3 * CHUNK
        gate.set()
        h.upload(client)
        assert client.committed == [("/f", data, True)]
        assert streaming.hold_budget.used == 0           # given back once durable
        h.close()
    finally:
        streaming.set_hold_budget(old)


def test_a_spill_that_fails_keeps_the_pieces_it_could_not_write():
    from gfs.mount.streaming import HoldBudget, _Held
    budget = HoldBudget(1 << 20)
    held = _Held(budget)
    held.add(0, b"a" * 10)
    held.add(10, b"b" * 10)
    with pytest.raises(OSError):
        held.spill(-1, 0, 100, inside_too=True)            # a descriptor that cannot be written
    assert [s for s, _ in held.pieces] == [0, 10] and held.bytes == 20 and budget.used == 20


class SlowDurableClient(RecordingClient):
    """Declares each chunk durable `delay` seconds after it has read it (replicas fsyncing),
    or, with `give_up`, gives every chunk up instead (as Client.put after its last retry)."""

    def __init__(self, delay: float, give_up: bool = False):
        super().__init__()
        self.delay, self.give_up = delay, give_up
        self.most_held = 0
        self.asked = threading.Event()       # for a first chunk: the put knows its chunk size

    def _sent(self, pieces) -> None:
        from gfs.mount import streaming
        self.asked.set()
        self.most_held = max(self.most_held, streaming.hold_budget.used)
        time.sleep(self.delay)
        if self.give_up:
            pieces.failed()
            raise Unavailable("every replica of the chain failed")


@pytest.fixture
def two_chunk_budget():
    from gfs.mount import streaming
    old = streaming.hold_budget.total
    streaming.set_hold_budget(2 * CHUNK)
    yield streaming.hold_budget
    streaming.set_hold_budget(old)


def start_streaming(h: WriteHandle, client: SlowDurableClient, data: bytes) -> None:
    """Write `data`, letting the put ask for its first chunk once the stream starts (before
    that the writer cannot know the chunks, and spills: a put's Create takes a moment)."""
    write_in_pieces(h, data[:CHUNK + 65536])
    assert client.asked.wait(5)
    write_in_pieces(h, data[CHUNK + 65536:], start=CHUNK + 65536)


def test_a_writer_past_the_hold_budget_waits_for_a_durable_chunk_not_the_spool(
        two_chunk_budget):
    """The put is slower than the writer: once the budget is spent, the writer waits for a
    chunk of its own to become durable (freeing its memory) instead of writing to the spool.
    Only the bytes written before the stream began ever reach the spool."""
    client, data = SlowDurableClient(delay=0.05), os.urandom(8 * CHUNK)
    h = streaming_handle(client)
    start_streaming(h, client, data)
    source = h._stream.source
    assert source.waited > 0                           # it did wait
    assert spool_blocks(h) <= CHUNK + 65536            # the first chunk, before streaming
    assert client.most_held <= two_chunk_budget.total
    h.upload(client)
    assert client.committed == [("/f", data, True)]
    assert two_chunk_budget.used == 0
    h.close()


def test_a_writer_waiting_for_a_chunk_the_put_gave_up_goes_on_to_the_spool(two_chunk_budget):
    """The chunk the writer waits for will never be durable (the put gave it up): the writer
    is not left hanging; its bytes go to the spool and the file is put whole."""
    client, data = SlowDurableClient(delay=0.05, give_up=True), os.urandom(6 * CHUNK)
    h = streaming_handle(client)
    started = time.monotonic()
    start_streaming(h, client, data)
    assert time.monotonic() - started < 10
    h.upload(client)
    assert client.committed == [("/f", data, False)]   # put whole from the spool
    assert two_chunk_budget.used == 0
    h.close()
