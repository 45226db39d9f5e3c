"""A chunkserver holding 10,000 replicas no file references registers with a running cluster,
with real daemons (issue 15): the leader's loops then do work in proportion to the metadata,
not to what was reported (work counters from `gfs admin health`), metadata requests stay about
as fast as before, nothing is deleted before the grace period — and with a short grace period
the 10,000 go in bounded batches over heartbeats while files are written, which all survive."""
from __future__ import annotations

import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest

from chunkserver.store import ChunkStore
from tests.conftest import ClusterFactory
from tests.integration.polling import wait_for

UNKNOWN = 10_000
FIRST = 1 << 40          # far above any handle the master allocates in a test
MASTER = {"election-timeout": 0.3, "chunk-size": "256KiB", "dead-after": 3}
CS = {"heartbeat-interval": 0.3}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory on tmpfs when there is one: the planted store is filled once by the store's
    own writer (which fsyncs every chunk) and hard-linked into each test's chunkserver, so the
    clusters live on the same file system."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.getbasetemp())
    root = Path(tempfile.mkdtemp(prefix="gfs-unknown-replicas-", dir=parent))
    store = ChunkStore(str(root / "planted"))
    for handle in range(FIRST, FIRST + UNKNOWN):
        w = store.begin_write(handle, 1)
        w.write(b"planted")
        w.commit()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_tmpfs_cluster(scratch, request):
    factory = ClusterFactory(scratch / request.node.name)
    yield factory
    factory.cleanup()


def cluster_with_planted_server(make_cluster, planted: Path, master: dict):
    """One master, three chunkservers up, and a fourth laid out with the planted store (hard
    links; not started)."""
    c = make_cluster(masters=1, options={"master": master, "chunkserver": CS}, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.up()
    name = c.add_chunkserver()
    data = Path(c.daemon(name)["data"])
    for tier in ("hot", "cold"):
        if (planted / tier).exists():
            shutil.copytree(planted / tier, data / tier, copy_function=os.link)
    return c, name, data


def planted_left(data: Path) -> int:
    """Planted chunks still on the server's disk."""
    prefix_from = f"{FIRST:016x}"
    return sum(1 for d in os.scandir(data / "hot") if d.is_dir()
               for f in os.scandir(d.path)
               if f.name.endswith(".chunk") and f.name[:16] >= prefix_from)


def stat_p50(client, path: str, n: int = 60) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.stat(path)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def test_unknown_replicas_cost_the_leader_work_in_proportion_to_the_metadata(
        make_tmpfs_cluster, scratch):
    c, name, data = cluster_with_planted_server(make_tmpfs_cluster, scratch / "planted", MASTER)
    with c.client() as client:
        client.put(io.BytesIO(os.urandom(600 << 10)), "/known")       # 3 chunks x 3 replicas
        wait_for(lambda: client.health()["planned_replicas"] == 9, 30, "the file replicated")
        before = stat_p50(client, "/known")
        c.start(name)
        wait_for(lambda: client.health()["orphan_replicas"] == UNKNOWN, 90,
                 "the orphan scan to see every planted replica")
        h0, t0 = client.health(), time.monotonic()
        time.sleep(12)
        h1, t1 = client.health(), time.monotonic()
        after = stat_p50(client, "/known")
        # The repair pass plans over the file's 9 replicas, not the 10,009 reported.
        assert h1["planned_replicas"] == 9 and h1["chunkservers_alive"] == 4
        # A cycle over the held handles at most once per GC period (10 s), a budgeted piece per
        # second; orphans already found are not looked up again before their grace is over:
        # only the file's 3 handles are, once a cycle.
        cycles = h1["orphan_scan_cycles"] - h0["orphan_scan_cycles"]
        assert cycles <= (t1 - t0) / 10 + 1
        assert h1["orphan_handles_scanned"] - h0["orphan_handles_scanned"] <= 3 * (cycles + 1)
        # Generous (a loaded 2-core machine): the point is no lasting multiple of the latency.
        assert after <= 3 * before + 0.010, (before, after)
        assert client.read("/known") is not None
    assert planted_left(data) == UNKNOWN          # nothing goes before the grace period


def test_past_the_grace_unknown_replicas_go_in_batches_while_files_are_written(
        make_tmpfs_cluster, scratch):
    c, name, data = cluster_with_planted_server(make_tmpfs_cluster, scratch / "planted",
                                                {**MASTER, "gc-grace": 4})
    written: dict[str, bytes] = {}
    with c.client() as client:
        c.start(name)
        wait_for(lambda: client.health()["orphan_replicas"] >= 1, 60, "the orphans seen")
        # Files created (pending uploads, AddChunk) and committed while the orphans go.
        for i in range(12):
            payload = os.urandom(300 << 10)
            client.put(io.BytesIO(payload), f"/w{i}")
            written[f"/w{i}"] = payload
        wait_for(lambda: planted_left(data) == 0, 150, "every planted replica deleted", 2.0)
        wait_for(lambda: client.health()["orphan_replicas"] == 0, 30, "no orphans left")
        for path, payload in written.items():
            assert client.read(path) == payload
        assert client.health()["under_replicated"] == 0
