"""Disk-use balancing and capacity-aware placement with real daemons: a new empty chunkserver
fills up until every server is within the threshold, while every file stays readable and every
chunk keeps exactly its replicas on distinct servers; a chunkserver at its --capacity gets no new
chunks and refuses writes beyond it."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from polling import wait_for

MiB = 1 << 20
OPTS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3,
                   "balance-threshold": 10, "balance-rate": "40MiB",
                   "balance-concurrency": 2},
        "chunkserver": {"heartbeat-interval": 0.3, "capacity": "48MiB"}}


def replicas_on_disk(cluster) -> dict[str, Counter]:
    """chunkserver name -> Counter of chunk handles (hex) stored in its hot and cold tiers."""
    out = {}
    for cs in cluster.spec["chunkservers"]:
        names = [p.name.split("-")[0] for p in Path(cs["data"]).glob("*/*/*.sums")]
        out[cs["name"]] = Counter(names)
    return out


def gfs_cli(cluster, *args: str) -> subprocess.CompletedProcess:
    env = cluster.cli_env()
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_a_new_empty_chunkserver_fills_until_the_cluster_is_within_the_threshold(make_cluster):
    cluster = make_cluster(masters=1, options=OPTS, start=False)
    for _ in range(3):
        cluster.add_chunkserver()
    cluster.up()
    files = {f"/f{i}": os.urandom(3 * MiB + i * 1000) for i in range(8)}
    n_chunks = sum(-(-len(d) // MiB) for d in files.values())               # 31
    with cluster.client() as c:
        for path, data in files.items():
            c.put(io.BytesIO(data), path)
        before = wait_for(lambda: (s := c.balance_status())["state"] == "balanced"
                          and s["spread"] < 0.01 and s, 20, "three equally full servers")
        assert before["moved"] == 0
        assert all(0.45 < s["use"] < 0.6 for s in before["servers"])

        name = cluster.add_chunkserver()
        started = time.monotonic()
        cluster.start(name)
        new = cluster.daemon(name)["bind"]
        errors: list[str] = []
        stop = threading.Event()

        def reader() -> None:                   # reads go on while chunks move
            with cluster.client() as rc:
                while not stop.is_set():
                    for path, data in files.items():
                        if rc.read(path) != data:
                            errors.append(path)

        t = threading.Thread(target=reader)
        t.start()
        try:
            wait_for(lambda: (s := c.balance_status())["moves_in_flight"] or s["moved"], 30,
                     "the first move")
            st = wait_for(lambda: (s := c.balance_status())["state"] == "balanced"
                          and s["spread"] <= 0.10 and s, 90, "the cluster to balance")
        finally:
            stop.set()
            t.join()
        took = time.monotonic() - started
        assert not errors, f"reads returned wrong bytes during balancing: {errors}"
        uses = {s["address"]: s["use"] for s in st["servers"]}
        assert max(uses.values()) - min(uses.values()) <= 0.10
        assert uses[new] > 0.25, uses                  # it filled up (mean 0.375)
        assert st["failures"] == 0 and st["moved"] >= 5
        assert st["moved_bytes"] >= st["moved"] * MiB
        print(f"balanced in {took:.1f}s: {st['moved']} moves, uses {uses}")

        # Every chunk: exactly 3 replicas, on 3 different servers, the source copies deleted.
        def three_each() -> bool:
            disk = replicas_on_disk(cluster)
            per_chunk = Counter(h for counts in disk.values() for h in counts)
            return (len(per_chunk) == n_chunks and set(per_chunk.values()) == {3}
                    and all(set(counts.values()) == {1} for counts in disk.values() if counts))
        wait_for(three_each, 20, "exactly three replicas of every chunk on disk")
        assert c.health()["status"] == "healthy"
        for path, data in files.items():
            assert c.read(path) == data

        out = gfs_cli(cluster, "admin", "balance", "--status")
        assert out.returncode == 0, out.stderr
        assert "state      balanced" in out.stdout and new in out.stdout
        js = json.loads(gfs_cli(cluster, "admin", "balance", "--json").stdout)
        assert js["state"] == "balanced" and len(js["servers"]) == 4


def test_a_chunkserver_at_its_capacity_gets_no_new_chunks(make_cluster):
    opts = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "no-balance": True},
            "chunkserver": {"heartbeat-interval": 0.3}}
    cluster = make_cluster(masters=1, options=opts, start=False)
    small = cluster.add_chunkserver(options={"capacity": "2.5MiB"})
    for _ in range(3):
        cluster.add_chunkserver()
    cluster.up()
    # 4 chunks at once: the empty small server is everyone's first choice until its heartbeat
    # says it is full, so some of them hit its capacity and are retried without it.
    files = {"/big": os.urandom(8 * MiB)}
    files.update({f"/f{i}": os.urandom(MiB - i) for i in range(12)})
    with cluster.client() as c:
        for path, data in files.items():
            c.put(io.BytesIO(data), path)
        held = replicas_on_disk(cluster)
        assert sum(held[small].values()) <= 2          # then it had no room for another chunk
        assert all(sum(n.values()) >= 18 for name, n in held.items() if name != small)
        for path, data in files.items():
            assert c.read(path) == data
        s = {s["address"]: s for s in c.chunkservers()}[cluster.daemon(small)["bind"]]
        assert s["capacity_bytes"] == int(2.5 * MiB) and s["free_bytes"] < MiB
        metrics = urllib.request.urlopen(
            f"http://{cluster.daemon(small)['metrics']}/metrics", timeout=5).read().decode()
    refused = [line for line in metrics.splitlines()
               if line.startswith("gfs_rpc_requests_total") and "RESOURCE_EXHAUSTED" in line]
    print("writes refused by the full server:", refused)


def test_small_files_fit_servers_with_less_room_than_a_chunk(make_cluster):
    """Placement wants room for what the chunk will hold when the writer knows it (a file, or a
    stream that ended within its first MiB), a whole chunk (64 MiB here) when it does not (a
    longer stream): then the put fails, clearly."""
    opts = {"master": {"election-timeout": 0.3}, "chunkserver": {"heartbeat-interval": 0.3,
                                                                 "capacity": "16MiB"}}
    cluster = make_cluster(masters=1, options=opts, start=False)
    for _ in range(3):
        cluster.add_chunkserver()
    cluster.up()
    data = os.urandom(300_000)
    with cluster.client() as c:
        c.put(io.BytesIO(data), "/small")
        assert c.read("/small") == data
    env = cluster.cli_env()
    out = subprocess.run([sys.executable, "-m", "cli.main", "put", "-", "/streamed"],
                         input=data, capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr                # ended within its first piece
    longer = os.urandom(3 * 1024 * 1024)
    out = subprocess.run([sys.executable, "-m", "cli.main", "put", "-", "/long"],
                         input=longer, capture_output=True, env=env, timeout=60)
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert err.startswith("gfs: resource exhausted: cluster full: only 0 of the 3 eligible "
                          "chunkservers have 64.0 MiB free beyond their repair reserve; "
                          "3 needed"), err
    assert "emptying the trash (0 entries, 0 B)" in err
    assert len(err.splitlines()) == 1
