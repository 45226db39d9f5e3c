"""The masters' Raft port authenticates every frame before anything is deserialized: a pickle
payload that would create a file when unpickled does nothing, and the cluster keeps serving."""
from __future__ import annotations

import os
import pickle
import socket
import struct
import time
import zlib



class _TouchOnUnpickle:
    """Unpickling this opens (creates) `path`: what an attacker's payload could do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pysyncobj_frame(payload: bytes) -> bytes:
    """A frame as pysyncobj's unauthenticated transport reads it: length, then zlib(pickle)."""
    return struct.pack("i", len(payload)) + payload


def _send(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        time.sleep(0.2)


def test_pickle_payload_on_the_raft_port_is_never_unpickled(make_cluster, tmp_path):
    c = make_cluster(3)
    marker = tmp_path / "pwned"
    evil = zlib.compress(pickle.dumps(_TouchOnUnpickle(str(marker))), 3)
    # The payload is live: unpickled the way pysyncobj would without authentication, it
    # creates its file (here in the test process, on a control path).
    control = tmp_path / "control"
    pickle.loads(zlib.decompress(zlib.compress(pickle.dumps(_TouchOnUnpickle(str(control))))))
    assert control.exists()

    forged_tag = struct.pack(">Q", int(time.monotonic())) + os.urandom(32) + evil
    for m in c.spec["masters"]:
        # bare (what pysyncobj without a password would unpickle), with a made-up tag, the
        # payload as a second frame after a bare one, and garbage
        _send(m["raft"], _pysyncobj_frame(evil))
        _send(m["raft"], _pysyncobj_frame(forged_tag))
        _send(m["raft"], _pysyncobj_frame(b"x" * 10) + _pysyncobj_frame(evil))
        _send(m["raft"], os.urandom(4096))
    time.sleep(0.5)
    assert not marker.exists()
    for m in c.spec["masters"]:
        assert c.pid(m["name"]), f"{m['name']} died"
    with c.client(deadline=20) as client:
        client.mkdir("/after-attack")
        assert client.stat("/after-attack").is_dir
    assert c.leader() is not None
