"""The writer's side of the bulk protocol (gfs/bulk.py): spans cut from pieces of any size,
block sums taken over by the chunk checksummer without hashing again, and ChunkUpload against
scripted replicas on real sockets (an early ERROR is raised while still sending, a replica that
hangs up is Unavailable, DONE is parsed)."""
from __future__ import annotations

import os
import random
import socket
import threading

import pytest

from gfs import bulk
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer, block_checksum
from gfs.errors import DataLoss, Unavailable


@pytest.mark.parametrize("seed", range(6))
def test_spans_are_whole_blocks_in_order_whatever_the_pieces(seed):
    rand = random.Random(seed)
    data = os.urandom(rand.randrange(1, 5 * bulk.MAX_SPAN))
    pieces, at = [], 0
    while at < len(data):
        n = rand.choice([1, 100, BLOCK_SIZE - 1, BLOCK_SIZE, 3 * BLOCK_SIZE, bulk.MAX_SPAN,
                         bulk.MAX_SPAN + 7, 2 * bulk.MAX_SPAN])
        pieces.append(data[at:at + n])
        at += n
    out, sizes = bytearray(), []
    for offset, view in bulk.spans(pieces):
        assert offset == len(out) and 0 < len(view) <= bulk.MAX_SPAN
        out += view                        # (a span is valid until the next one is asked for)
        sizes.append(len(view))
    assert out == data
    assert all(n % BLOCK_SIZE == 0 for n in sizes[:-1])


def test_added_block_sums_give_the_same_chunk_checksum():
    data = os.urandom(3 * BLOCK_SIZE + 99)
    hashed, added = ChunkChecksummer(), ChunkChecksummer()
    hashed.update(data)
    for offset, view in bulk.spans([data]):
        added.add_blocks(bulk.block_sums(view), len(view))
    assert added.finish() == hashed.finish() and added.length == len(data)
    with pytest.raises(ValueError):                     # nothing after a short last block
        added.add_blocks([0], BLOCK_SIZE)


class Replica:
    """A scripted first replica: reads the request and `read` bytes, then sends `answer`."""

    def __init__(self, answer: bytes, read: int = 0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got = 0
        threading.Thread(target=self._serve, args=(answer, read), daemon=True).start()

    def _serve(self, answer: bytes, read: int) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while self.got < read and (chunk := conn.recv(1 << 16)):
                self.got += len(chunk)
            conn.sendall(answer)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1 << 16):      # drain, as the chunkserver does
                pass


def upload(replica: Replica) -> bulk.ChunkUpload:
    return bulk.BulkLinks().upload(f"127.0.0.1:{replica.port}", replica.port, 1, 1, b"cap",
                                   [], 5.0)


def test_an_early_error_is_raised_while_sending():
    replica = Replica(bulk.encode_error(DataLoss("block at offset 0 arrived damaged")))
    up = upload(replica)
    data = memoryview(os.urandom(BLOCK_SIZE))
    with pytest.raises(DataLoss, match="replica 127.0.0.1:.*arrived damaged"):
        for _ in range(200):
            up.send(0, data, [block_checksum(data)])
    up.close()


def test_done_is_parsed_and_a_replica_hanging_up_is_unavailable():
    data = memoryview(os.urandom(100))
    sums = [block_checksum(data)]
    # A replica answers DONE only after the COMMIT: request, one span, the commit frame.
    sent = bulk.REQUEST.size + len(bulk.encode_span(0, len(data), sums)) + len(data) + \
        bulk.FRAME.size
    replica = Replica(bulk.encode_done(100, 42, ["a:1", "b:2"]), read=sent)
    up = upload(replica)
    up.send(0, data, sums)
    up.commit(42)
    done = up.result(5.0)
    assert (done.length, done.checksum, done.replicas) == (100, 42, ["a:1", "b:2"])
    up.close()
    up = upload(Replica(b""))
    with pytest.raises(Unavailable, match="broke off the write"):
        up.commit(42)
        up.result(5.0)
    up.close()
