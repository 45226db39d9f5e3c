"""Raft frames go out as zlib streams of stored blocks (master/raft_private.py, _StoredFrames):
readers decompress them as before, and sending costs no deflate."""
from __future__ import annotations

import os
import zlib

import pysyncobj.tcp_connection as tcp_connection

from master.raft_private import PrivateRaftState


def test_frames_are_stored_not_deflated_and_any_pysyncobj_reader_decompresses_them():
    PrivateRaftState.send_frames_uncompressed()
    frames = tcp_connection.zlib
    for data in (b"", b"a" * 100_000, os.urandom(300_000)):
        frame = frames.compress(data, 3)          # what TcpConnection.send asks for
        assert len(frame) >= len(data)            # stored: not shrunk even when it could be
        assert zlib.decompress(frame) == data     # what TcpConnection reads with, unchanged
        assert frames.decompress(zlib.compress(data, 3)) == data   # old senders still read


def test_a_connection_flooded_by_its_peer_hands_over_messages_after_a_bounded_read():
    """pysyncobj read a connection until its socket was empty before handling any message;
    with bound_reads one poll reads at most READ_BUDGET (plus one receive) and hands over the
    messages read, while the peer keeps writing."""
    import socket
    import struct
    import threading

    import pysyncobj.pickle as sopickle
    from pysyncobj.poller import PollPoller

    import master.raft_private as private

    PrivateRaftState.bound_reads()
    piece = {"type": "append_entries", "serialized": (os.urandom(1 << 20), False, False)}
    body = zlib.compress(sopickle.dumps(piece), 0)
    frame = struct.pack("i", len(body)) + body
    total = 96
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    got = []
    poller = PollPoller()
    connection = tcp_connection.TcpConnection(poller, onMessageReceived=got.append,
                                              socket=ours, timeout=60,
                                              recvBufferSize=4 << 20)

    def write() -> None:
        try:
            theirs.sendall(frame * total)
        except OSError:                    # our end closed first: done
            pass

    writer = threading.Thread(target=write, daemon=True)
    try:
        writer.start()
        while not got:
            poller.poll(1.0)
            read = sum(len(m["serialized"][0]) for m in got) \
                + len(connection._TcpConnection__readBuffer)
            assert read <= private.READ_BUDGET + (4 << 20) + len(frame)
        assert len(got) < total
    finally:
        ours.close()                       # the writer's sendall fails and it ends
        writer.join(5)
        theirs.close()


def test_reads_reuse_the_connections_buffer_and_deliver_every_frame_intact():
    """Frames smaller and larger than one receive, split anywhere, arrive whole and in order
    through the connection's kept receive buffer; the peer closing disconnects."""
    import random
    import socket
    import struct
    import threading

    import pysyncobj.pickle as sopickle
    from pysyncobj.poller import PollPoller

    import master.raft_private as private

    PrivateRaftState.bound_reads()
    rng = random.Random(5)
    sizes = [0, 1, 40, private.RECEIVE_BUFFER - 7, private.RECEIVE_BUFFER + 3,
             int(2.5 * private.RECEIVE_BUFFER)] + [rng.randrange(1, 5000) for _ in range(200)]
    sent = [{"type": "probe", "seq": i, "data": rng.randbytes(n)} for i, n in enumerate(sizes)]
    stream = b""
    for message in sent:
        body = zlib.compress(sopickle.dumps(message), 0)
        stream += struct.pack("i", len(body)) + body
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    got, closed = [], []
    poller = PollPoller()
    connection = tcp_connection.TcpConnection(poller, onMessageReceived=got.append,
                                              onDisconnected=lambda: closed.append(1),
                                              socket=ours, timeout=60, recvBufferSize=4 << 20)

    def write() -> None:
        cut = 0
        while cut < len(stream):               # uneven pieces: frames split anywhere
            step = rng.choice((1, 3, 4096, 70_000, 1 << 20))
            theirs.sendall(stream[cut:cut + step])
            cut += step
        theirs.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=write, daemon=True)
    buffers = set()
    try:
        writer.start()
        for _ in range(100_000):
            if closed:
                break
            poller.poll(1.0)
            buffer = getattr(connection, "_gfs_receive_buffer", None)
            if buffer is not None:
                buffers.add(id(buffer))
        assert got == sent
        assert closed                          # the peer's end of stream disconnects
        assert len(buffers) == 1               # one buffer, kept for every receive
    finally:
        writer.join(5)
        ours.close()
        theirs.close()


def test_messages_and_commands_pickle_bytes_as_bytes_and_old_pickles_still_load():
    """Protocol 4, not pysyncobj's protocol 2 (bytes as UTF-8 encoded latin-1 text): a 4 KiB
    command is ~4 KiB in its entry and again in the message carrying it; what older masters
    wrote (journals, peers) still loads."""
    import pickle

    import pysyncobj.pickle as sopickle

    PrivateRaftState.pickle_bytes_as_bytes()
    data = os.urandom(4096)
    command = sopickle.dumps((7, (data,), {}))
    message = sopickle.dumps({"type": "append_entries", "entries": [(command, 12, 3)]})
    assert len(command) < len(data) + 64 and len(message) < len(data) + 192
    assert sopickle.loads(sopickle.loads(message)["entries"][0][0]) == (7, (data,), {})
    old = pickle.dumps({"entries": [(pickle.dumps((7, (data,), {}), 2), 12, 3)]}, 2)
    assert len(old) > 1.3 * len(data)          # what protocol 2 made of the same bytes
    assert sopickle.loads(sopickle.loads(old)["entries"][0][0]) == (7, (data,), {})
