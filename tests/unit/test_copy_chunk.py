"""CopyChunk between real in-process chunkserver gRPC services on 127.0.0.1: plain copies,
block-level failover over partly bad sources, repair in place, idempotence, errors, throttling."""
from __future__ import annotations

import os
import random
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from chunkserver.store import ChunkStore
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer
from gfs.errors import Unavailable
from gfs.transfer import read_chunk
from grpc_node import Node, daemon_channels
from proto import chunkserver_pb2 as cpb

BS = BLOCK_SIZE


@pytest.fixture
def nodes(tmp_path):
    made = [Node(tmp_path / f"cs{i}") for i in range(3)]
    yield made
    for n in made:
        n.stop()


@pytest.fixture
def channels():
    ch = daemon_channels()
    yield ch
    ch.close()


def put(node: Node, handle: int, data: bytes, version: int = 1):
    w = node.store.begin_write(handle, version)
    w.write(data)
    return w.commit()


def checksum_of(data: bytes) -> int:
    summer = ChunkChecksummer()
    summer.update(data)
    return summer.finish()


def damage_block(node: Node, handle: int, block: int) -> None:
    meta = node.store.get(handle)
    offset = block * BS + min(100, meta.length - block * BS - 1)
    with open(node.store._path(handle, meta.version, "chunk"), "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


def read_back(node: Node, handle: int) -> bytes:
    return b"".join(node.store.read(handle))


def copy(channels, target: Node, handle: int, version: int, data: bytes,
         sources: list[str], **override) -> cpb.CopyResponse:
    fields = {"handle": handle, "version": version, "sources": sources, "length": len(data),
              "checksum": checksum_of(data)}
    fields.update(override)
    return channels.stub(target.address).CopyChunk(cpb.CopyRequest(**fields), timeout=30)


def copied_bytes() -> float:
    return REGISTRY.get_sample_value("gfs_chunkserver_copy_bytes_total") or 0.0


def test_plain_copy(nodes, channels):
    a, _, c = nodes
    data = random.Random(1).randbytes(20 * BS + 123)
    meta = put(a, 0x10, data, version=3)
    before = copied_bytes()
    resp = copy(channels, c, 0x10, 3, data, [c.address, a.address])   # own address is skipped
    assert (resp.length, resp.checksum) == (meta.length, meta.checksum)
    assert c.store.get(0x10).version == 3
    assert read_back(c, 0x10) == data
    assert c.store.corrupt() == {}
    assert copied_bytes() - before == len(data)
    assert c.changes == 1
    # An empty chunk copies too.
    put(a, 0x11, b"")
    assert copy(channels, c, 0x11, 1, b"", [a.address]).length == 0
    assert c.store.get(0x11).length == 0


def test_every_source_bad_somewhere_is_rebuilt_block_by_block(nodes, tmp_path, channels):
    a, b, c = nodes
    d = Node(tmp_path / "cs3")
    try:
        data = random.Random(2).randbytes(40 * BS + 7)
        for node in (a, b, d):
            put(node, 0x20, data, version=2)
        damage_block(a, 0x20, 1)             # all within the first 1 MiB response
        damage_block(b, 0x20, 2)
        damage_block(d, 0x20, 3)
        damage_block(a, 0x20, 30)
        damage_block(b, 0x20, 40)            # the last, short block
        copy(channels, c, 0x20, 2, data, [a.address, b.address, d.address])
        assert read_back(c, 0x20) == data
        assert c.store.corrupt() == {}
        # The sources found out about their own damage while serving.
        assert a.store.corrupt() == {0x20: 2} and b.store.corrupt() == {0x20: 2}
        assert d.store.corrupt() == {0x20: 2}
    finally:
        d.stop()


def test_read_chunk_fails_over_per_block_and_reports_each_bad_replica_once(nodes, channels):
    a, b, c = nodes
    data = random.Random(3).randbytes(6 * BS)
    for node in (a, b):
        put(node, 0x21, data)
    damage_block(a, 0x21, 1)
    damage_block(b, 0x21, 2)
    damage_block(a, 0x21, 4)
    got, reports = bytearray(), []
    read_chunk(channels, 0x21, 1, [c.address, a.address, b.address], len(data),
               checksum_of(data), 0, len(data), got.extend,
               report_bad=lambda addr, why: reports.append(addr))
    assert bytes(got) == data
    assert sorted(reports) == sorted([a.address, b.address])


def test_copy_repairs_a_corrupt_replica_in_place(nodes, channels):
    a, _, c = nodes
    data = random.Random(4).randbytes(5 * BS)
    put(a, 0x30, data, version=7)
    put(c, 0x30, data, version=7)
    damage_block(c, 0x30, 3)
    assert c.store.verify(0x30) is False
    assert c.store.corrupt() == {0x30: 7}
    marker = c.store._path(0x30, 7, "bad")
    copy(channels, c, 0x30, 7, data, [a.address])
    assert c.store.corrupt() == {}
    assert not os.path.exists(marker)
    assert c.store.verify(0x30) is True and read_back(c, 0x30) == data
    assert ChunkStore(c.store.root).corrupt() == {}


def test_copy_is_idempotent(nodes, channels):
    a, _, c = nodes
    data = random.Random(5).randbytes(3 * BS + 1)
    put(a, 0x40, data)
    copy(channels, c, 0x40, 1, data, [a.address])
    before = copied_bytes()
    # Already held and healthy: answered at once, even with no reachable source.
    resp = copy(channels, c, 0x40, 1, data, ["127.0.0.1:1"])
    assert resp.length == len(data) and resp.checksum == checksum_of(data)
    assert copied_bytes() == before
    assert c.changes == 1


def test_all_sources_bad_is_unavailable_and_leaves_nothing(nodes, channels):
    a, b, c = nodes
    data = random.Random(6).randbytes(8 * BS)
    put(a, 0x50, data)
    put(b, 0x50, data)
    damage_block(a, 0x50, 5)
    damage_block(b, 0x50, 5)
    with pytest.raises(grpc.RpcError) as err:
        copy(channels, c, 0x50, 1, data, [a.address, b.address, "127.0.0.1:1"])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no replica could serve" in err.value.details()
    assert c.store.get(0x50) is None
    assert [n for n in os.listdir(c.store.tmp_dir)] == []
    assert c.changes == 0
    # Also via the library call: Unavailable.
    with pytest.raises(Unavailable):
        read_chunk(channels, 0x50, 1, [a.address, b.address], len(data), checksum_of(data),
                   0, len(data), lambda piece: None)


def test_wrong_version_on_every_source_is_unavailable(nodes, channels):
    a, _, c = nodes
    data = b"x" * 1000
    put(a, 0x51, data, version=2)
    with pytest.raises(grpc.RpcError) as err:
        copy(channels, c, 0x51, 3, data, [a.address])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_checksum_mismatch_is_data_loss(nodes, channels):
    a, _, c = nodes
    data = random.Random(7).randbytes(2 * BS)
    put(a, 0x60, data)
    with pytest.raises(grpc.RpcError) as err:
        copy(channels, c, 0x60, 1, data, [a.address], checksum=checksum_of(data) ^ 1)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert c.store.get(0x60) is None


@pytest.mark.parametrize("fields", [
    {"version": 0},
    {"sources": []},
    {"sources": ["SELF"]},
    {"length": (64 << 20) + 1},
])
def test_bad_arguments(nodes, channels, fields):
    a, _, c = nodes
    put(a, 0x70, b"abc")
    if fields.get("sources") == ["SELF"]:
        fields = {"sources": [c.address]}
    request = {"handle": 0x70, "version": 1, "sources": [a.address], "length": 3,
               "checksum": checksum_of(b"abc")}
    request.update(fields)
    with pytest.raises(grpc.RpcError) as err:
        channels.stub(c.address).CopyChunk(cpb.CopyRequest(**request), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_newer_version_held_here_is_not_replaced(nodes, channels):
    a, _, c = nodes
    put(a, 0x71, b"old")
    put(c, 0x71, b"new", version=2)
    with pytest.raises(grpc.RpcError) as err:
        copy(channels, c, 0x71, 1, b"old", [a.address])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert read_back(c, 0x71) == b"new"


def test_copy_is_throttled(nodes, channels):
    a, _, c = nodes
    data = random.Random(8).randbytes(1 << 20)
    put(a, 0x80, data)
    started = time.monotonic()
    copy(channels, c, 0x80, 1, data, [a.address], max_bytes_per_s=4 << 20)   # ~0.25 s
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed <= 2.0
    assert read_back(c, 0x80) == data


def test_status_reports_corrupt_replicas(nodes, channels):
    a = nodes[0]
    put(a, 0x90, b"abc")
    a.store.mark_corrupt(0x90, 1, "test")
    st = channels.stub(a.address).Status(cpb.StatusRequest(), timeout=5)
    assert st.corrupt_replicas == 1 and st.scrubbed_bytes == 0
