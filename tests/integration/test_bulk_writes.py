"""Chunk writes over the bulk data protocol (gfs/bulk.py, chunkserver/bulk.py) against real
chunkservers: puts go over it down the whole chain (GFS_BULK_WRITES=0 falls back to gRPC);
hostile writers (truncated frames, lying lengths, damaged blocks, spans out of order, forged or
wrong capabilities, writers that stall) get an error or are dropped, leave nothing behind, and
the chunkserver keeps serving others with bounded memory; a replica killed mid-chain makes the
write fail cleanly, never acknowledged; a put and get over TLS."""
from __future__ import annotations

import io
import os
import socket
import struct
import time
import urllib.request
from pathlib import Path

import pytest

from cli.localcluster import LocalCluster
from gfs import bulk
from gfs.checksum import BLOCK_SIZE, block_checksum, chunk_checksum
from gfs.transfer import Channels
from polling import wait_for
from small_cluster import OPTIONS, small_cluster
from test_bulk_protocol import closed, connect, rss_bytes, status   # raw-socket helpers

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    return small_cluster(make_module_cluster, OPTIONS)


def metric(cluster, name: str) -> float:
    """A counter summed over the cluster's chunkservers."""
    total = 0.0
    for d in cluster.spec["chunkservers"]:
        body = urllib.request.urlopen(f"http://{d['metrics']}/metrics", timeout=10).read()
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.split()[-1])
    return total


def written(cluster) -> float:
    return metric(cluster, "gfs_chunkserver_bulk_write_bytes_total")


def chunk_files(cluster, handle: int) -> list[Path]:
    """Published or temporary files of chunk `handle` on any chunkserver."""
    return [p for c in cluster.spec["chunkservers"] for p in Path(c["data"]).rglob("*")
            if f"{handle:016x}" in p.name]


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The server's answer to a write: (kind, payload)."""
    kind, n, value = bulk.FRAME.unpack(bulk.recv_exact(sock, bulk.FRAME.size))
    return kind, bytes(bulk.recv_exact(sock, n))


def allocate(cluster, name: str):
    """A new chunk of a pending file: (AddChunk answer with replicas and write capability)."""
    with cluster.client() as c:
        return c.add_chunk(c.create(name, replication=3), 0)


def span(offset: int, data: bytes, sums: list[int] | None = None) -> bytes:
    sums = sums if sums is not None else [block_checksum(data[i:i + BLOCK_SIZE])
                                          for i in range(0, len(data), BLOCK_SIZE)]
    return bulk.encode_span(offset, len(data), sums) + data


def write_request(alloc, capability: bytes | None = None) -> bytes:
    return bulk.encode_write_request(alloc.handle, alloc.version,
                                     alloc.capability if capability is None else capability,
                                     list(alloc.replicas[1:]))


class Stream(io.RawIOBase):
    """Bytes that can be read once only, like a pipe: a put of it cannot be retried."""

    def __init__(self, data: bytes):
        self._left = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._left.readinto(buffer)


def wait_gone(cluster, handle: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while chunk_files(cluster, handle):
        assert time.monotonic() < deadline, f"left behind: {chunk_files(cluster, handle)}"
        time.sleep(0.1)


def test_puts_go_over_the_bulk_protocol_unless_turned_off(cluster, monkeypatch):
    data = os.urandom(3 * CHUNK + 12345)
    before = written(cluster)
    with cluster.client() as c:
        info = c.put(io.BytesIO(data), "/bulk")
        assert c.read("/bulk") == data
    assert all(len(set(ch.replicas)) == 3 for ch in info.chunks)
    assert written(cluster) - before == 3 * len(data)       # every replica, over the bulk port
    monkeypatch.setenv("GFS_BULK_WRITES", "0")
    before = written(cluster)
    with cluster.client() as c:
        c.put(io.BufferedReader(io.BytesIO(data)), "/grpc")  # a stream, over gRPC
        assert c.read("/grpc") == data
    assert written(cluster) == before


def test_hostile_writers_get_an_error_leave_nothing_and_the_server_goes_on(cluster):
    alloc = allocate(cluster, "/hostile")
    address = alloc.replicas[0]
    data = os.urandom(CHUNK)
    cases = [   # (what follows a good request, the error's code)
        (span(0, data[:CHUNK // 2])[:5000], None),                      # truncated: dropped
        (bulk.FRAME.pack(bulk.DATA, bulk.MAX_SPAN + 1, 0), b"INVALID_ARGUMENT"),  # lying length
        (span(0, data[:BLOCK_SIZE]) + span(3 * BLOCK_SIZE, data[:BLOCK_SIZE]),
         b"INVALID_ARGUMENT"),                                         # a span out of order
        (span(0, data[:100]) + span(100, data[:100]), b"INVALID_ARGUMENT"),  # after a short one
        (span(0, data[:BLOCK_SIZE], [123]), b"DATA_LOSS"),             # a damaged block
        (bulk.FRAME.pack(bulk.END, 0, 0), b"INVALID_ARGUMENT"),        # an unknown frame
    ]
    for tail, code in cases:
        with connect(address) as s:
            s.sendall(write_request(alloc) + tail)
            if code is None:
                continue
            kind, text = answer(s)
            assert kind == bulk.ERROR and text.startswith(code), text
            assert closed(s)
    with connect(address) as s:                        # a lying chain length
        s.sendall(struct.pack("<4sBBHQQQq", bulk.MAGIC, 1, bulk.OP_WRITE, 0, alloc.handle,
                              alloc.version, 50_000, -1))
        kind, text = answer(s)
        assert kind == bulk.ERROR and b"chain of 50000 bytes" in text
    forged = bytearray(alloc.capability)
    forged[-1] ^= 1
    with cluster.client() as c:
        read_cap = c.stat("/bulk", for_read=True).chunks[0]
    for capability, code in [(bytes(forged), b"UNAUTHENTICATED"),
                             (read_cap.capability, b"PERMISSION_DENIED")]:
        with connect(address) as s:
            s.sendall(write_request(alloc, capability))
            kind, text = answer(s)
            assert kind == bulk.ERROR and text.startswith(code), text
    wait_gone(cluster, alloc.handle)                   # no temp file anywhere in the chain
    with connect(address) as s:                        # the same chunk, written properly
        s.sendall(write_request(alloc))
        sums = []
        for at in range(0, CHUNK, 256 << 10):          # spans of any whole-block size
            piece = data[at:at + (256 << 10)]
            sums += [block_checksum(piece[i:i + BLOCK_SIZE]) for i in range(0, len(piece),
                                                                             BLOCK_SIZE)]
            s.sendall(span(at, piece))
        s.sendall(bulk.FRAME.pack(bulk.COMMIT, 0, chunk_checksum(sums)))
        kind, payload = answer(s)
        assert kind == bulk.DONE, payload
        assert struct.unpack_from("<Q", payload)[0] == chunk_checksum(sums)
        assert sorted(payload[8:].decode().split(",")) == sorted(alloc.replicas)
    assert len([p for p in chunk_files(cluster, alloc.handle) if p.suffix == ".chunk"]) == 3


def test_a_wrong_commit_checksum_is_never_acknowledged(cluster):
    alloc = allocate(cluster, "/wrongsum")
    data = os.urandom(2 * BLOCK_SIZE)
    with connect(alloc.replicas[0]) as s:
        s.sendall(write_request(alloc) + span(0, data) + bulk.FRAME.pack(bulk.COMMIT, 0, 42))
        kind, text = answer(s)
        assert kind == bulk.ERROR and text.startswith(b"DATA_LOSS"), text
    wait_gone(cluster, alloc.handle)


def test_stalled_writers_block_nobody_and_memory_stays_bounded(cluster):
    alloc = allocate(cluster, "/stalled")
    address = alloc.replicas[0]
    name = next(d["name"] for d in cluster.spec["chunkservers"] if d["bind"] == address)
    pid = cluster.pid(name)
    rss_before = rss_bytes(pid)
    data = os.urandom(CHUNK)
    stuck = []
    for i in range(24):     # each sends half a span (or half a chunk) and then nothing
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((address.rsplit(":", 1)[0], status(address).bulk_port))
        tail = span(0, data)[:CHUNK // 2] if i % 2 else span(0, data[:CHUNK // 2])
        s.sendall(write_request(alloc) + tail)
        stuck.append(s)
    try:
        time.sleep(1.0)
        payload = os.urandom(2 * CHUNK)
        with cluster.client() as c:                   # others are served meanwhile
            c.put(io.BytesIO(payload), "/meanwhile")
            assert c.read("/meanwhile") == payload
        # One span buffer (1 MiB) per connection, whatever the writers do.
        assert rss_bytes(pid) - rss_before < 24 * bulk.MAX_SPAN + (32 << 20)
    finally:
        for s in stuck:
            s.close()
    wait_gone(cluster, alloc.handle)                   # their temp files are removed


def test_a_restarted_chunkserver_s_new_bulk_port_costs_a_writer_no_retry(cluster):
    """Every hop of a chain (the client, each forwarding replica) caches the bulk ports it
    learned; a chunkserver restarted since listens on a new one. Each hop looks it up again
    on the spot, so even a put that cannot be retried (a stream) goes through."""
    victim = cluster.spec["chunkservers"][0]
    with cluster.client() as c:
        c.put(io.BytesIO(os.urandom(8 * CHUNK)), "/warm")   # every hop learns every port
        before = status(victim["bind"]).bulk_port
        cluster.kill(victim["name"])
        wait_for(lambda: victim["bind"] not in cluster.registered_chunkservers(), 15,
                 "the master to see the killed chunkserver dead")
        cluster.start(victim["name"])
        cluster.wait_healthy()
        assert status(victim["bind"]).bulk_port != before
        for i in range(4):                                  # chains in varied orders
            data = os.urandom(2 * CHUNK)
            info = c.put(Stream(data), f"/after-restart-{i}")
            assert all(victim["bind"] in ch.replicas for ch in info.chunks)
            assert c.read(f"/after-restart-{i}") == data


def test_a_replica_killed_mid_chain_fails_the_write_and_nothing_is_acknowledged(make_cluster):
    c = make_cluster(masters=1, options=OPTIONS, start=False)
    for _ in range(4):                                 # a spare for the put after the kill
        c.add_chunkserver()
    c.up()
    alloc = allocate(c, "/killed")
    last = next(d["name"] for d in c.spec["chunkservers"] if d["bind"] == alloc.replicas[-1])
    data = os.urandom(CHUNK)
    with connect(alloc.replicas[0]) as s:
        s.settimeout(60)
        s.sendall(write_request(alloc))
        for at in range(0, 4 * BLOCK_SIZE, BLOCK_SIZE):
            s.sendall(span(at, data[at:at + BLOCK_SIZE]))
        c.kill(last)                                   # kill -9 of the chain's last replica
        sums = [block_checksum(data[i:i + BLOCK_SIZE]) for i in range(0, CHUNK, BLOCK_SIZE)]
        try:
            for at in range(4 * BLOCK_SIZE, CHUNK, BLOCK_SIZE):
                time.sleep(0.01)
                s.sendall(span(at, data[at:at + BLOCK_SIZE]))
            s.sendall(bulk.FRAME.pack(bulk.COMMIT, 0, chunk_checksum(sums)))
        except OSError:
            pass                                       # the chain may have hung up already
        kind, text = answer(s)
        assert kind == bulk.ERROR and text.startswith(b"UNAVAILABLE"), text
        assert alloc.replicas[-1].encode() in text     # names the replica that went away
    # A put meanwhile still succeeds (on a chain of the live servers) and reads back.
    payload = os.urandom(3 * CHUNK)
    with c.client() as cl:
        cl.put(io.BytesIO(payload), "/after")
        assert cl.read("/after") == payload


def test_put_and_get_over_tls(tmp_path):
    cluster = LocalCluster(tmp_path / "tls")
    cluster.create(masters=1, chunkservers=3, options=OPTIONS, tls=True)
    try:
        with cluster.signed_in():
            cluster.up(timeout=60)
            data = os.urandom(3 * CHUNK + 777)
            with cluster.client() as c:
                c.put(io.BytesIO(data), "/tls", replication=3)
                out = tmp_path / "out"
                assert c.get("/tls", str(out)) == len(data)
                assert out.read_bytes() == data
            assert written(cluster) == 3 * len(data)   # the bulk port, TLS on every hop
            # A plaintext writer gets nowhere on a TLS bulk port.
            channels = Channels(tls_ca=cluster.tls.ca_pem())
            address = cluster.chunkserver_addresses()[0]
            port = channels.bulk_port(address)
            channels.close()
            assert port
            with cluster.client() as c:
                alloc = c.add_chunk(c.create("/plain", replication=3), 0)
            with socket.create_connection((address.rsplit(":", 1)[0], port), timeout=10) as s:
                try:
                    s.sendall(write_request(alloc) + span(0, data[:BLOCK_SIZE])
                              + bulk.FRAME.pack(bulk.COMMIT, 0, 0))
                    assert not s.recv(1 << 16).startswith(bulk.FRAME.pack(bulk.DONE, 0, 0)[:1])
                except OSError:
                    pass
            assert written(cluster) == 3 * len(data)
    finally:
        cluster.down()
