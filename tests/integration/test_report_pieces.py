"""A chunkserver's full report in pieces (GFS_REPORT_BATCH), with real daemons: a chunkserver
restarted with a hundred replicas reports them in several pieces, the master then places
reads on it for every chunk, and a replica lost while it was down (missing from the complete
report) is noticed and repaired."""
from __future__ import annotations

import os
from pathlib import Path

from chunkserver.store import ChunkStore
from tests.integration.polling import wait_for
from tests.integration.small_cluster import OPTIONS, small_cluster

CHUNK = 64 << 10
CHUNKS = 100
BATCH = 16          # 100 replicas: 7 pieces


def test_full_report_in_pieces(make_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("GFS_REPORT_BATCH", str(BATCH))     # the daemons inherit it
    c = small_cluster(make_cluster, OPTIONS)
    data = os.urandom(CHUNK * CHUNKS)
    src = tmp_path / "src"
    src.write_bytes(data)
    cs = c.spec["chunkservers"][0]
    with c.client() as client:
        client.put(str(src), "/many", chunk_size=CHUNK)

        def held_by_all() -> bool:
            chunks = client.stat("/many").chunks
            return len(chunks) == CHUNKS and all(len(ch.replicas) == 3 for ch in chunks)
        wait_for(held_by_all, 30, "three replicas of every chunk")

        c.kill(cs["name"])
        store = ChunkStore(cs["data"])
        metas = store.chunks()
        assert len(metas) == CHUNKS
        lost = metas[len(metas) // 2]              # in the middle piece of the report
        assert store.delete(lost.handle, lost.version)
        c.start(cs["name"])
        log = Path(cs["data"]) / "daemon.log"
        wait_for(lambda: "full report of 99 replicas sent in 7 pieces" in log.read_text(), 60,
                 "the restarted server's report in pieces")

        # The lost replica was missing from the complete report: the master notices and has
        # it copied back to the only server without it. (Stat's replica lists also name the
        # recorded replica set, so the proof is the file on the server's disk.)
        copied = Path(cs["data"]) / "hot" / f"{lost.handle & 0xff:02x}" / (
            f"{lost.handle:016x}-{lost.version}.chunk")
        wait_for(copied.exists, 60, "the lost replica repaired onto the restarted server")
        assert client.read("/many") == data
    c.kill(cs["name"])
    assert ChunkStore(cs["data"]).get(lost.handle) is not None    # copied back, on disk
