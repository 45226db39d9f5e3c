"""The reader's side of the bulk protocol (gfs/bulk.py via gfs.transfer.read_chunk) against
scripted chunkservers on real sockets: a lying or broken replica is left for the next one at
the exact byte where it stopped, bad blocks are reported, refusals are raised."""
from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from gfs import bulk, transfer
from gfs.checksum import BLOCK_SIZE, block_checksum, chunk_checksum
from gfs.errors import Unauthenticated
from gfs.transfer import Channels, read_chunk

DATA = os.urandom(40 * BLOCK_SIZE + 1234)          # three spans of 16 blocks and a bit
SUMS = [block_checksum(DATA[i:i + BLOCK_SIZE]) for i in range(0, len(DATA), BLOCK_SIZE)]


class Replica:
    """A scripted bulk server: honest unless `lie` changes a DATA frame (it gets the frame's
    span index and its header + sums + bytes, and returns what to send; shorter: send that and
    hang up)."""

    def __init__(self, lie=None, error: bytes = b"", one_shot: bool = False):
        self.lie, self.error, self.one_shot = lie, error, one_shot
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                while True:
                    head = bulk.recv_exact(conn, bulk.REQUEST.size)
                    *_, cap_len, _, _, offset, length = bulk.REQUEST.unpack(head)
                    bulk.recv_exact(conn, cap_len)
                    if self.error:
                        conn.sendall(bulk.FRAME.pack(bulk.ERROR, len(self.error), 0) + self.error)
                        continue
                    conn.sendall(bulk.FRAME.pack(bulk.START, 0, len(DATA)))
                    start = offset - offset % BLOCK_SIZE
                    end = len(DATA) if length < 0 else offset + length
                    for i, at in enumerate(range(start, end, bulk.MAX_SPAN)):
                        data = DATA[at:min(at + bulk.MAX_SPAN, len(DATA))]
                        first = at // BLOCK_SIZE
                        sums = SUMS[first:first + -(-len(data) // BLOCK_SIZE)]
                        out = (bulk.FRAME.pack(bulk.DATA, len(data), at)
                               + struct.pack(f"<{len(sums)}Q", *sums) + data)
                        if self.lie is not None:
                            told = self.lie(i, out)
                            if len(told) < len(out):      # a truncated frame: then hang up
                                conn.sendall(told)
                                return
                            out = told
                        conn.sendall(out)
                    conn.sendall(bulk.FRAME.pack(bulk.END, 0, 0))
                    if self.one_shot:       # as a server does with an idle connection
                        return
            except (bulk.ProtocolError, OSError):
                return

    def close(self):
        self.sock.close()


class ScriptedChannels(Channels):
    """Channels whose chunkservers' bulk ports are the scripted replicas' (no Status RPC)."""

    def bulk_port(self, address: str) -> int:
        return int(address.rsplit(":", 1)[1])


def flip_in_span(index):
    """Damage block 3 of span `index`."""
    def lie(i, out):
        if i != index:
            return out
        out = bytearray(out)
        at = bulk.FRAME.size + 8 * 16 + 3 * BLOCK_SIZE + 5
        out[at] ^= 0xFF
        return bytes(out)
    return lie


def lying_length(i, out):
    kind, n, value = bulk.FRAME.unpack_from(out)
    return bulk.FRAME.pack(kind, 1 << 30, value) + out[bulk.FRAME.size:] if i == 1 else out


def truncated(i, out):
    return out if i == 0 else out[:len(out) // 2]


@pytest.fixture
def channels(monkeypatch):
    monkeypatch.setattr(transfer, "BULK_MIN_BYTES", 0)     # (the scripts speak no gRPC)
    ch = ScriptedChannels()
    yield ch
    ch.close()


def read(channels, replicas, offset=0, length=len(DATA), handle=7):
    got, bad = bytearray(), []
    read_chunk(channels, handle, 1, [r.address for r in replicas], len(DATA), chunk_checksum(SUMS),
               offset, length, lambda piece: got.extend(piece),
               report_bad=lambda address, why: bad.append(address), timeout=10,
               capability=b"c" * 62)
    return bytes(got), bad


@pytest.mark.parametrize("lie", [flip_in_span(1), lying_length, truncated])
def test_a_lying_or_broken_replica_is_left_at_the_byte_where_it_stopped(channels, lie):
    liar, honest = Replica(lie), Replica()
    try:
        # Whatever the ordering by load picks first, both are asked and the bytes are right.
        for handle, (offset, length) in enumerate([(0, len(DATA)), (0, len(DATA)),
                                                   (BLOCK_SIZE + 7, 20 * BLOCK_SIZE)]):
            got, bad = read(channels, [liar, honest], offset, length, handle)
            assert got == DATA[offset:offset + length]
            assert set(bad) <= {liar.address}
    finally:
        liar.close()
        honest.close()


def test_bad_blocks_are_reported_and_the_rest_comes_from_the_next_replica(channels):
    liar, honest = Replica(flip_in_span(0)), Replica()
    try:
        seen = set()
        for handle in range(4):     # the rotation by handle starts at either replica
            got, bad = read(channels, [liar, honest], handle=handle)
            assert got == DATA
            seen.update(bad)
        assert seen == {liar.address}
    finally:
        liar.close()
        honest.close()


def test_refusals_are_raised_when_no_replica_serves(channels):
    a, b = Replica(error=b"UNAUTHENTICATED capability expired"), \
        Replica(error=b"UNAUTHENTICATED capability expired")
    try:
        with pytest.raises(Unauthenticated, match="capability expired"):
            read(channels, [a, b])
    finally:
        a.close()
        b.close()


def test_a_kept_connection_the_server_closed_is_replaced(channels):
    server = Replica(one_shot=True)
    try:
        for handle in range(3):         # each read after the first finds its kept one closed
            assert read(channels, [server], handle=handle) == (DATA, [])
    finally:
        server.close()
