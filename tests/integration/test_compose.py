"""Compose with real daemons: a file made of three part files' chunks (of different lengths)
reads back byte for byte across the part boundaries, survives a restart of every master, is
repaired after a chunkserver is killed, is never touched by garbage collection, and reads
correctly through fsspec and the FUSE mount."""
from __future__ import annotations

import hashlib
import io
import os
import random
import shutil

import pytest

from gfs.errors import GfsError
from gfs.filesystem import GfsFileSystem
from polling import wait_for
from test_mount import Mount
from test_self_healing import files_of, healthy, name_of

KIB = 1024
OPTIONS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 2,
                      "gc-grace": 1},
           "chunkserver": {"heartbeat-interval": 0.3}}
# (bytes, chunk size): chunks of 128 KiB, 1 MiB and 256 KiB, each part ending in a short one.
PARTS = [(300 * KIB + 17, 128 * KIB), (5, 1 << 20), (2 * (1 << 20) + 333 * KIB, 256 * KIB)]


def chunk_bytes(data: bytes, info) -> list[bytes]:
    return [data[c.index_offset:c.index_offset + c.length] for c in info.chunks]


def test_compose_three_parts_reads_survives_restarts_repairs_and_mounts(make_cluster, tmp_path):
    cluster = make_cluster(masters=3, options=OPTIONS, start=False)
    for _ in range(4):
        cluster.add_chunkserver()
    cluster.up()
    rng = random.Random(18)
    admin = cluster.client()
    admin.user_add("alice")
    token = admin.token_create("compose", principal="alice")[0]
    with admin, cluster.client(token=token) as c:
        c.mkdir("/alice/upload")
        parts = []
        for i, (size, chunk_size) in enumerate(PARTS):
            data = rng.randbytes(size)
            c.put(io.BytesIO(data), f"/alice/upload/part{i}", chunk_size=chunk_size)
            parts.append(data)
        whole = b"".join(parts)
        part_handles = [ch.handle for i in range(3) for ch in c.stat(f"/alice/upload/part{i}").chunks]
        with pytest.raises(GfsError) as refused:
            c.compose("/alice/obj", ["/alice/upload/part0", "/alice/upload/nope"])
        assert refused.value.code == "NOT_FOUND" and "nope" in refused.value.message
        assert c.exists("/alice/upload/part0")           # a refusal moves nothing

        c.compose("/alice/obj", [f"/alice/upload/part{i}" for i in range(3)])
        info = c.stat("/alice/obj")
        assert info.size == len(whole) and [ch.handle for ch in info.chunks] == part_handles
        assert len({ch.length for ch in info.chunks}) > 2            # chunks of many lengths
        assert [e.path for e in c.list("/alice/upload")] == []
        assert c.read("/alice/obj") == whole
        boundaries = [sum(len(p) for p in parts[:i]) for i in (1, 2)]
        readable = c.stat("/alice/obj", for_read=True)
        for at in boundaries + [ch.index_offset for ch in info.chunks[1:]]:
            for lo, hi in ((at - 1, at + 1), (max(0, at - 70_000), at + 200_000), (at, at + 5)):
                assert c.read_at(readable, lo, hi - lo) == whole[lo:hi], (lo, hi)
        # A ranged read asks the masters for the chunks of its bytes only, their offsets with
        # them (the lengths differ); a stat for some bytes is refused for others.
        for lo, hi in ((0, 1), (boundaries[0] - 3, boundaries[0] + 3), (boundaries[1], len(whole))):
            part = c.stat("/alice/obj", for_read=True, span=(lo, hi - lo))
            assert [(ch.handle, ch.index_offset) for ch in part.chunks] == [
                (ch.handle, ch.index_offset) for ch in info.chunks
                if ch.index_offset < hi and ch.index_offset + ch.length > lo]
            assert part.chunk_span == (lo, hi) and c.read_at(part, lo, hi - lo) == whole[lo:hi]
        assert c.stat("/alice/obj", span=(0, 0)).chunks == []
        with pytest.raises(GfsError) as outside:
            c.read_at(c.stat("/alice/obj", for_read=True, span=(0, 1)), 0, 2)
        assert outside.value.code == "INVALID_ARGUMENT" and "stat it for those bytes" in str(
            outside.value.message)
        # Appending is composing again, the file itself first (gfs has no byte-level append).
        tail = rng.randbytes(100 * KIB + 3)
        c.put(io.BytesIO(tail), "/alice/upload/tail")
        part_handles += [ch.handle for ch in c.stat("/alice/upload/tail").chunks]
        c.compose("/alice/obj", ["/alice/obj", "/alice/upload/tail"])
        whole += tail
        assert [ch.handle for ch in c.stat("/alice/obj").chunks] == part_handles
        assert c.read("/alice/obj", len(whole) - len(tail) - 7, 20) == whole[-len(tail) - 7:][:20]
        out = tmp_path / "obj"
        assert c.get("/alice/obj", str(out), parallel=4) == len(whole)
        assert out.read_bytes() == whole

        # Garbage collection runs (grace 1 s) and leaves every moved chunk alone.
        wait_for(lambda: healthy(admin), 20, "a healthy cluster")
        plan = admin.gc_plan(collect=True)
        assert not {o["handle"] for o in plan["orphans"]} & set(part_handles)
        assert all(files_of(cluster, h) for h in part_handles)

    # Every master is killed (-9) and restarts: the composed file is in the replicated state.
    for m in cluster.spec["masters"]:
        cluster.kill(m["name"])
    for m in cluster.spec["masters"]:
        cluster.start(m["name"])
    cluster.wait_healthy(30)
    with cluster.client() as admin, cluster.client(token=token) as c:
        wait_for(lambda: healthy(admin), 30, "a healthy cluster after the restart")
        info = c.stat("/alice/obj")
        assert [ch.handle for ch in info.chunks] == part_handles
        assert c.read("/alice/obj") == whole

        # kill -9 a chunkserver holding some of it: repair brings each chunk back to 3 copies.
        names = [cs["name"] for cs in cluster.spec["chunkservers"]]
        victim = name_of(cluster, info.chunks[0].replicas[0])
        cluster.kill(victim)
        live = [n for n in names if n != victim]
        wait_for(lambda: admin.health()["dead"], 10, "the death to be noticed")
        wait_for(lambda: (lambda h: h["under_replicated"] == 0 and not h["repair_in_flight"])(
            admin.health()), 60, "re-replication")
        expected = chunk_bytes(whole, c.stat("/alice/obj"))
        for ch, data in zip(c.stat("/alice/obj").chunks, expected):
            holders = files_of(cluster, ch.handle, live)
            assert len(holders) == 3, f"chunk {ch.index} on {sorted(holders)}"
            assert all([p.read_bytes() for p in found] == [data] for found in holders.values())
        assert c.read("/alice/obj") == whole

    # fsspec reads ranges across the part boundaries.
    GfsFileSystem.clear_instance_cache()
    fs = GfsFileSystem(masters=",".join(cluster.master_addresses()), token=token)
    assert fs.cat_file("/alice/obj") == whole
    for at in boundaries:
        assert fs.cat_file("/alice/obj", start=at - 3, end=at + 3) == whole[at - 3:at + 3]
    with fs.open("/alice/obj", "rb") as f:
        f.seek(boundaries[0] - 10)
        assert f.read(20) == whole[boundaries[0] - 10:boundaries[0] + 10]
    GfsFileSystem.clear_instance_cache()

    # The FUSE mount reads it whole, and from the middle.
    if not (os.access("/dev/fuse", os.R_OK | os.W_OK) and shutil.which("fusermount3")):
        return
    mount = Mount(cluster, token, tmp_path / "mnt", "--path", "/alice")
    try:
        mounted = mount.path / "obj"
        assert hashlib.sha256(mounted.read_bytes()).digest() == hashlib.sha256(whole).digest()
        with open(mounted, "rb") as f:
            f.seek(boundaries[1] - 100)
            assert f.read(300) == whole[boundaries[1] - 100:boundaries[1] + 200]
    finally:
        mount.close()
