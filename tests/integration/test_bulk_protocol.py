"""The bulk read protocol (gfs/bulk.py, chunkserver/bulk.py) against real chunkservers: reads go
over it and every block is verified; hostile peers (garbage, truncated and lying requests,
forged capabilities, slow peers, peers that stop reading) get an error or are dropped while the
chunkserver keeps serving others with bounded memory; a get striped over the replicas survives
one of them being killed mid-read."""
from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
import urllib.request

import grpc
import pytest

from gfs import bulk
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc
from small_cluster import OPTIONS, small_cluster

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    return small_cluster(make_module_cluster, OPTIONS)


def status(address: str) -> cpb.StatusResponse:
    with grpc.insecure_channel(address) as ch:
        return cpb_grpc.ChunkserverStub(ch).Status(cpb.StatusRequest(), timeout=10)


def bulk_bytes(address: str) -> float:
    """The chunkserver's gfs_chunkserver_bulk_bytes_total."""
    url = f"http://{status(address).metrics_address}/metrics"
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        if line.startswith("gfs_chunkserver_bulk_bytes_total "):
            return float(line.split()[1])
    return 0.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def connect(address: str) -> socket.socket:
    host = address.rsplit(":", 1)[0]
    return socket.create_connection((host, status(address).bulk_port), timeout=10)


def frame(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """One answer frame: (kind, n, value, its payload; for DATA, sums and bytes)."""
    kind, n, value = bulk.FRAME.unpack(bulk.recv_exact(sock, bulk.FRAME.size))
    size = n + 8 * -(-n // bulk.BLOCK_SIZE) if kind == bulk.DATA else n
    return kind, n, value, bytes(bulk.recv_exact(sock, size))


def closed(sock: socket.socket) -> bool:
    """Did the server close the connection? (a reset when our junk was left unread)"""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def read_all(sock: socket.socket) -> tuple[bytes, str]:
    """Frames up to END or ERROR: (data, "" or the error text)."""
    data = b""
    while True:
        kind, n, _, payload = frame(sock)
        if kind == bulk.END:
            return data, ""
        if kind == bulk.ERROR:
            return data, payload.decode()
        if kind == bulk.DATA:
            data += payload[-n:]


@pytest.fixture(scope="module")
def seed_bytes(cluster):
    data = os.urandom(2 * CHUNK)
    with cluster.client() as c:
        c.put(io.BytesIO(data), "/seed")
    return data


@pytest.fixture
def seed(cluster, seed_bytes):
    """A 2-chunk file: (its bytes, its first chunk's info with a fresh read capability)."""
    with cluster.client() as c:
        return seed_bytes, c.stat("/seed", for_read=True).chunks[0]


def test_gets_go_over_the_bulk_protocol(cluster, seed):
    data, _ = seed
    before = sum(bulk_bytes(a) for a in cluster.chunkserver_addresses())
    with cluster.client() as c:
        assert c.read("/seed") == data
        assert c.read("/seed", CHUNK - 5, 70_000) == data[CHUNK - 5:CHUNK - 5 + 70_000]
    assert sum(bulk_bytes(a) for a in cluster.chunkserver_addresses()) - before >= len(data)


def test_hostile_requests_get_an_error_and_the_server_goes_on(cluster, seed):
    data, chunk = seed
    address = chunk.replicas[0]
    good = bulk.encode_request(chunk.handle, chunk.version, 0, -1, chunk.capability)

    with connect(address) as s:                       # garbage: error, then closed
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40)
        kind, _, _, text = frame(s)
        assert kind == bulk.ERROR and text.startswith(b"INVALID_ARGUMENT")
        assert closed(s)
    with connect(address) as s:                       # a lying capability length
        s.sendall(struct.pack("<4sBBHQQQq", bulk.MAGIC, 1, 1, 60_000, chunk.handle,
                              chunk.version, 0, -1))
        kind, _, _, text = frame(s)
        assert kind == bulk.ERROR and b"capability of 60000 bytes" in text
    with connect(address) as s:                       # truncated: the server just drops it
        s.sendall(good[:17])
    with connect(address) as s:
        forged = bytearray(chunk.capability)
        forged[-1] ^= 1
        s.sendall(bulk.encode_request(chunk.handle, chunk.version, 0, -1, bytes(forged)))
        assert read_all(s)[1].startswith("UNAUTHENTICATED")
        s.sendall(bulk.encode_request(chunk.handle + 1, chunk.version, 0, -1,
                                      chunk.capability))
        assert read_all(s)[1].startswith("PERMISSION_DENIED")
        s.sendall(bulk.encode_request(chunk.handle, chunk.version, CHUNK + 1, 1,
                                      chunk.capability))
        assert read_all(s)[1].startswith("INVALID_ARGUMENT")
        s.sendall(good)                               # the same connection still serves
        assert read_all(s) == (data[:CHUNK], "")
    with connect(address) as s:                       # a slow peer, byte by byte
        for i in range(len(good)):
            s.sendall(good[i:i + 1])
            time.sleep(0.002)
        assert read_all(s) == (data[:CHUNK], "")


def test_peers_that_stop_reading_block_nobody_and_memory_stays_bounded(cluster, seed):
    data, chunk = seed
    address = chunk.replicas[0]
    name = next(d["name"] for d in cluster.spec["chunkservers"] if d["bind"] == address)
    pid = cluster.pid(name)
    rss_before = rss_bytes(pid)
    stuck = []
    for _ in range(24):         # each asks for the chunk and never reads a byte of it
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((address.rsplit(":", 1)[0], status(address).bulk_port))
        s.sendall(bulk.encode_request(chunk.handle, chunk.version, 0, -1, chunk.capability))
        stuck.append(s)
    try:
        time.sleep(1.0)
        with cluster.client() as c:                  # others are served meanwhile
            for _ in range(3):
                assert c.read("/seed") == data
        with connect(address) as s:
            s.sendall(bulk.encode_request(chunk.handle, chunk.version, 0, -1,
                                          chunk.capability))
            assert read_all(s) == (data[:CHUNK], "")
        # At most one span (1 MiB) per connection is held, whatever the peers do.
        assert rss_bytes(pid) - rss_before < 24 * bulk.MAX_SPAN + (32 << 20)
    finally:
        for s in stuck:
            s.close()


def test_a_striped_get_survives_a_replica_killed_mid_read(cluster, tmp_path):
    data = os.urandom(12 * CHUNK + 4321)
    addresses = cluster.chunkserver_addresses()
    with cluster.client() as c:
        c.put(io.BytesIO(data), "/striped")
        before = {a: bulk_bytes(a) for a in addresses}
        killed = threading.Event()
        got = 0

        def progress(n: int) -> None:
            nonlocal got
            got += n
            if got >= 3 * CHUNK and not killed.is_set():
                killed.set()
                cluster.kill("chunkserver-1")

        out = tmp_path / "out"
        assert c.get("/striped", str(out), parallel=4, progress=progress) == len(data)
        assert killed.is_set()
        assert out.read_bytes() == data
    victim = cluster.daemon("chunkserver-1")["bind"]
    served = [a for a in addresses if a != victim and bulk_bytes(a) > before[a]]
    assert len(served) == 2, "the get was not spread over the replicas"
