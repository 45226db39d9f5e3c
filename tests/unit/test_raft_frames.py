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
