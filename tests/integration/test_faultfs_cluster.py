"""Real daemons on FaultFS disks: power loss of the whole cluster, of one chunkserver during a put
and of a master during a snapshot install; full and failing disks; slow fsyncs. Every
acknowledged write must survive, and the cluster must come back healthy."""
from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time

import pytest

from faultfs_fixtures import needs_fuse
from gfs.errors import GfsError
from polling import wait_for

pytestmark = needs_fuse

MASTER = {"election-timeout": 0.5, "chunk-size": "256KiB", "dead-after": 3, "no-balance": True}
CS = {"heartbeat-interval": 0.3}


def faultfs_cluster(make_cluster, chunkservers: int = 3, master: dict | None = None,
                    masters: int = 3):
    cluster = make_cluster(masters=masters, faultfs=True, start=False,
                           options={"master": {**MASTER, **(master or {})}, "chunkserver": CS})
    for _ in range(chunkservers):
        cluster.add_chunkserver()
    cluster.up(timeout=60)
    return cluster


class Load:
    """Puts (0-700 KiB, so 0-3 chunks), mkdirs and empty creates from one thread until stopped;
    remembers what was acknowledged."""

    def __init__(self, cluster, prefix: str, seed: int):
        self.cluster, self.prefix, self.rng = cluster, prefix, random.Random(seed)
        self.acked: dict[str, str] = {}          # path -> sha256 ("" for a directory)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        with self.cluster.client(deadline=10) as c:
            c.mkdir(self.prefix, parents=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with self.cluster.client(deadline=5) as c:
            i = 0
            while not self._stop.is_set():
                i += 1
                path = f"{self.prefix}/f{i}"
                try:
                    if i % 5 == 0:
                        c.mkdir(path)
                        self.acked[path] = ""
                    else:
                        data = self.rng.randbytes(self.rng.randrange(0, 700 << 10))
                        c.put(io.BytesIO(data), path)
                        self.acked[path] = hashlib.sha256(data).hexdigest()
                except GfsError:
                    self.errors += 1
                    time.sleep(0.05)

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: len(self.acked) >= n, timeout, f"{n} acknowledged operations")


def check_acked(cluster, acked: dict[str, str]) -> None:
    """Every acknowledged file reads back whole, every acknowledged directory is there."""
    assert acked
    with cluster.client(deadline=30) as c:
        for path, digest in acked.items():
            if digest:
                sink = io.BytesIO()
                c.get(path, sink)
                assert hashlib.sha256(sink.getvalue()).hexdigest() == digest, path
            else:
                assert c.stat(path).is_dir, path


def put_ok(cluster, path: str, size: int = 300 << 10) -> None:
    with cluster.client(deadline=30) as c:
        data = os.urandom(size)
        c.put(io.BytesIO(data), path)
        sink = io.BytesIO()
        c.get(path, sink)
        assert sink.getvalue() == data


def test_whole_cluster_power_loss_during_a_put_load(make_cluster):
    cluster = faultfs_cluster(make_cluster)
    names = [d["name"] for d in cluster.daemons()]
    for mode, seed in (("all", 1), ("torn", 2)):
        with Load(cluster, f"/load-{mode}", seed) as load:
            load.wait_acked(12)
            results = cluster.power_loss(names, mode=mode, seed=seed)
            load.stop()
        lost = sum(r["writes_lost"] + r["dir_ops_lost"] for r in results.values())
        assert lost > 0, results          # the power loss did take something back
        assert not any(r["errors"] for r in results.values()), results
        cluster.up(timeout=90)
        check_acked(cluster, load.acked)
    put_ok(cluster, "/after")
