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


@pytest.mark.slow
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


def heard_from_since(c, address: str, since: float) -> bool:
    """Has the master had a heartbeat from the chunkserver at `address` since `since`
    (time.monotonic())?"""
    elapsed = time.monotonic() - since
    return any(s["address"] == address and s["alive"] and s["last_seen_s"] < elapsed
               for s in c.chunkservers())


def healthy(c) -> dict | None:
    h = c.health()
    return h if h["status"] == "healthy" and not h["repair_in_flight"] else None


def test_a_chunkserver_power_loss_during_puts(make_cluster):
    """Puts run while one chunkserver loses power; once it is back and the cluster healthy, every
    acknowledged file reads back from that chunkserver alone (the others killed)."""
    cluster = faultfs_cluster(make_cluster, masters=1)
    with Load(cluster, "/cs-loss", 3) as load:
        load.wait_acked(6)
        victim = cluster.disk("chunkserver-1")
        for attempt in range(5):
            # (the chain fsyncs as soon as a chunk is in: look often to catch one before its
            # fsync; on a loaded machine the fsync can still win the race: power it on, again)
            if attempt:
                cluster.start("chunkserver-1")
            wait_for(lambda: victim.status()["pending_writes"], 30, "a chunk being written",
                     0.01)
            result = cluster.power_loss(["chunkserver-1"], mode="prefix",
                                        seed=3 + attempt)["chunkserver-1"]
            if result["writes_lost"] + result["dir_ops_lost"] > 0:
                break
        assert result["writes_lost"] + result["dir_ops_lost"] > 0, result
        n = len(load.acked)
        load.wait_acked(n + 4)                      # the puts go on without it
        restarted = time.monotonic()
        cluster.start("chunkserver-1")
    cluster.wait_healthy(60)
    address = next(cs["bind"] for cs in cluster.spec["chunkservers"]
                   if cs["name"] == "chunkserver-1")
    with cluster.client(deadline=30) as c:
        # Within its dead-after time the master still counts the chunkserver's replicas from
        # before the power loss: until the restarted process has reported, "healthy" can be
        # that stale view (on a loaded machine the read below then found it still starting).
        wait_for(lambda: heard_from_since(c, address, restarted), 60,
                 "a heartbeat from chunkserver-1 since its restart")
        wait_for(lambda: healthy(c), 90, "every chunk back at full replication")
    cluster.kill("chunkserver-2")
    cluster.kill("chunkserver-3")
    check_acked(cluster, load.acked)


def _installing(backing: str) -> bool:
    """Has a snapshot install begun on this master's disk (its temporary copy or staged store)?"""
    raft = os.path.join(backing, "raft")
    return any(n.startswith("tmp") for n in os.listdir(raft)) or any(
        n.startswith("meta.") for n in os.listdir(backing))


def test_a_master_power_loss_during_a_snapshot_install(make_cluster):
    """A lagging follower gets the leader's snapshot; the power goes out in the middle of the
    install (its fsyncs slowed down to widen the window). It comes back, catches up, and with it
    in the quorum instead of the leader nothing acknowledged is missing."""
    cluster = faultfs_cluster(make_cluster, chunkservers=1, master={"compact-entries": 40})
    follower = next(m["name"] for m in cluster.spec["masters"] if m["name"] != cluster.leader())
    cluster.kill(follower)
    acked: dict[str, str] = {}
    with cluster.client(deadline=20) as c:
        for i in range(120):                        # enough entries for the leader to compact
            c.mkdir(f"/snap/d{i}", parents=True)
            acked[f"/snap/d{i}"] = ""
    disk = cluster.disk(follower)
    disk.fsync_delay(0.3, 0.6)
    cluster.start(follower)
    wait_for(lambda: _installing(disk.backing), 60, "the snapshot install to begin", 0.05)
    time.sleep(random.uniform(0, 1.5))
    result = cluster.power_loss([follower], mode="all")[follower]
    assert not result["errors"], result
    cluster.start(follower)
    cluster.wait_healthy(60)
    with cluster.client(deadline=20) as c:
        c.mkdir("/snap/after")
        acked["/snap/after"] = ""
    leader = cluster.leader()
    target = cluster.master_status(cluster.daemon(leader))["commit_index"]
    wait_for(lambda: (cluster.master_status(cluster.daemon(follower)) or {}).get(
        "applied_index", 0) >= target, 60, f"{follower} to catch up")
    cluster.kill(leader)                            # the follower is now part of every quorum
    check_acked(cluster, acked)


def test_disk_full_and_failing_on_a_chunkserver(make_cluster):
    """A chunkserver whose disk is full (then failing) refuses chunk writes with a clear error and
    stays up; nothing acknowledged is lost; with space back it takes writes again."""
    cluster = faultfs_cluster(make_cluster, masters=1)
    acked = {}
    with cluster.client(deadline=20) as c:
        for i in range(3):
            data = os.urandom(300 << 10)
            c.put(io.BytesIO(data), f"/before{i}")
            acked[f"/before{i}"] = hashlib.sha256(data).hexdigest()
    disk = cluster.disk("chunkserver-1")
    for fault in ("enospc", "eio"):
        disk.enospc(True) if fault == "enospc" else disk.eio("*", ["write", "fsync", "create"])
        with cluster.client(deadline=15) as c, pytest.raises(GfsError) as err:
            c.put(io.BytesIO(os.urandom(300 << 10)), f"/during-{fault}")   # needs all 3 servers
        message = str(err.value)
        # A full disk shows in the chunkserver's heartbeat (the master then refuses the put as
        # "cluster full") or, between heartbeats, in the chunk write itself.
        expected = ("cluster full", "No space left") if fault == "enospc" else \
            ("Input/output error",)
        assert any(e in message for e in expected), message
        assert cluster.pid("chunkserver-1"), "the chunkserver must not crash"
        disk.clear_faults()
        check_acked(cluster, acked)
        with cluster.client() as c:         # the masters have heard that the disk has room again
            wait_for(lambda: all(s["disk_use"] < 1.0 for s in c.chunkservers()), 20,
                     "the chunkservers to report free space", 0.2)
    put_ok(cluster, "/after")


def test_disk_full_and_failing_on_the_leader(make_cluster):
    """The leader's disk fills up (then fails): the masters keep answering — the cluster moves on
    or the command fails with a clear error — nothing acknowledged is lost, and with the fault
    gone the cluster takes writes again with every master healthy."""
    cluster = faultfs_cluster(make_cluster, chunkservers=1, master={"replication": 1})
    acked: dict[str, str] = {}
    with cluster.client(deadline=20) as c:
        c.mkdir("/before")
        acked["/before"] = ""
    for fault in ("enospc", "eio"):
        leader = cluster.leader()
        disk = cluster.disk(leader)
        disk.enospc(True) if fault == "enospc" else disk.eio("raft/*", ["write", "fsync"])
        outcomes = []
        with cluster.client(deadline=10) as c:
            for i in range(5):
                try:
                    c.mkdir(f"/during-{fault}-{i}")
                    acked[f"/during-{fault}-{i}"] = ""
                    outcomes.append("ok")
                except GfsError as err:
                    outcomes.append(f"{type(err).__name__}: {err}")
        assert all(o == "ok" or "leader" in o or "No space" in o or "Input/output" in o
                   for o in outcomes), outcomes
        disk.clear_faults()
        if not cluster.pid(leader):
            cluster.start(leader)
        cluster.wait_healthy(60)
        with cluster.client(deadline=20) as c:
            c.mkdir(f"/after-{fault}")
            acked[f"/after-{fault}"] = ""
        check_acked(cluster, acked)


@pytest.mark.slow
def test_slow_fsync_on_a_master_and_a_chunkserver(make_cluster):
    """fsyncs of 100 ms to 2 s on the leader and on one chunkserver: puts still complete and every
    acknowledged one reads back after a whole-cluster power loss."""
    cluster = faultfs_cluster(make_cluster)
    leader = cluster.leader()
    cluster.disk(leader).fsync_delay(0.1, 2.0)
    cluster.disk("chunkserver-1").fsync_delay(0.1, 2.0)
    with Load(cluster, "/slow", 4) as load:
        load.wait_acked(5, timeout=120)
        results = cluster.power_loss([d["name"] for d in cluster.daemons()], mode="all")
    assert results[leader] is not None
    cluster.up(timeout=90)
    check_acked(cluster, load.acked)
