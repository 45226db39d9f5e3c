"""A full cluster heals itself, with real daemons: chunkservers with a small --capacity filled
to the brim with live files, trash and orphans; new writes fail fast with "cluster full"; a
corrupt replica is rebuilt in place; a dead chunkserver's chunks are blocked for lack of room and
health says why; with space pressure on, the trash gives way and every chunk is back at full
redundancy."""
from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
import urllib.request

import pytest

from gfs.client import Client
from gfs.errors import ResourceExhausted
from polling import wait_for
from test_self_healing import files_of, flip_bits, healthy

CHUNK = 256 << 10
FILE = 3 * CHUNK
MASTER = {"election-timeout": 0.3, "chunk-size": "256KiB", "dead-after": 2,
          "gc-grace": 3600, "space-pressure": 0, "gc-pressure-grace": 1, "no-balance": True}
CS = {"heartbeat-interval": 0.3, "capacity": "16MiB", "scrub-rate": "64MiB",
      "scrub-interval": 1}


def gfs(cluster, *args: str) -> subprocess.CompletedProcess:
    env = cluster.cli_env()
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def fill(c: Client, rng: random.Random) -> dict[str, bytes]:
    """Put files until the cluster is full; of every four, two go to the trash and one is
    overwritten once (its first chunks become orphans): the orphans alone (a fifth of what is
    stored) cannot make room for a dead server's chunks. Returns the live files."""
    live: dict[str, bytes] = {}
    for i in range(200):
        data = rng.randbytes(FILE)
        try:
            c.put(io.BytesIO(data), f"/f{i}")
            if i % 4 == 2:
                data = rng.randbytes(FILE)
                c.put(io.BytesIO(data), f"/f{i}", overwrite=True)
        except ResourceExhausted as err:
            assert "cluster full" in str(err) and "beyond their repair reserve" in str(err)
            assert "emptying the trash" in str(err)
            return live
        if i % 2:
            c.delete(f"/f{i}")
        else:
            live[f"/f{i}"] = data
    raise AssertionError("the cluster never filled up")


def test_a_full_cluster_with_trash_and_orphans_returns_to_full_redundancy(make_cluster):
    cluster = make_cluster(masters=1, options={"master": MASTER, "chunkserver": CS}, start=False)
    for _ in range(4):
        cluster.add_chunkserver()
    cluster.up()
    rng = random.Random(20)
    with cluster.client(deadline=20) as c:
        live = fill(c, rng)
        h = wait_for(lambda: healthy(c), 30, "a healthy full cluster")
        assert h["trash_entries"] > 0 and h["orphan_replicas"] > 0 and h["disk_use"] > 0.9
        started = time.monotonic()
        with pytest.raises(ResourceExhausted, match="cluster full"):
            c.put(io.BytesIO(rng.randbytes(CHUNK)), "/more")
        assert time.monotonic() - started < 5                  # fails fast, not after retries

        # A corrupt replica on a full server is rebuilt where it is.
        victim = next(iter(live))
        chunk = c.stat(victim).chunks[1]
        holders = files_of(cluster, chunk.handle)
        name = sorted(holders)[0]
        repaired_before = c.health()["repaired"]
        flip_bits(holders[name][0], rng, 3)
        # found by the scrubber: counted as corrupt, or (a 256 KiB rebuild can finish between
        # two looks) already rebuilt
        wait_for(lambda: (lambda h: h["corrupt_replicas"] or h["repaired"] > repaired_before)(
            c.health()), 20, "the scrubber to find it", 0.05)
        h = wait_for(lambda: healthy(c), 30, "the corrupt replica rebuilt")
        assert h["repaired"] > repaired_before and h["corrupt_replicas"] == 0
        expected = live[victim][CHUNK:2 * CHUNK]
        assert {n: [p.read_bytes() for p in ps] for n, ps in files_of(cluster, chunk.handle).items()} \
            == {n: [expected] for n in holders}                # same servers, intact bytes
        assert c.read(victim) == live[victim]

        # A dead chunkserver: its chunks have nowhere to go, and health says why.
        cluster.stop("chunkserver-4")
        # (copies that still find room, e.g. where trash gave way, may run first: wait until
        # every queued chunk is blocked, the state in which the time left is unknown)
        h = wait_for(lambda: (lambda h: h if h["repair_blocked"] and not h["repair_in_flight"]
                              and h["repair_blocked"] == h["repair_queue"]
                              else None)(c.health()), 60, "repair blocked")
        assert h["repair_blocked_reason"] == "no_room" and h["eta_s"] == -1
        assert h["repair_blocked_detail"].startswith(
            f"no chunkserver with room for {h['repair_blocked']} chunk")
        assert "in trash" in h["repair_blocked_detail"]
        assert "orphans awaiting grace" in h["repair_blocked_detail"]
    out = gfs(cluster, "admin", "health")
    assert out.returncode == 0 and "blocked       " in out.stdout and "no chunkserver with room" \
        in out.stdout, out.stdout
    js = json.loads(gfs(cluster, "admin", "health", "--json").stdout)
    assert js["repair_blocked_reason"] == "no_room"
    body = urllib.request.urlopen(f"http://{cluster.spec['masters'][0]['metrics']}/metrics",
                                  timeout=5).read().decode()
    blocked = [line for line in body.splitlines()
               if line.startswith('gfs_health_repair_blocked{reason="no_room"}')]
    assert blocked and float(blocked[0].split()[-1]) > 0, blocked

    # Space pressure on (the default, 90 %): the trash gives way, orphans go, the chunks of the
    # dead server are copied, and new writes fit again.
    cluster.spec["options"]["master"]["space-pressure"] = 90
    cluster._save()
    cluster.stop("master-1")
    cluster.start("master-1")
    cluster.wait_healthy(60)              # a new client fails fast while nothing listens yet
    with cluster.client(deadline=20) as c:
        h = wait_for(lambda: healthy(c), 120, "full redundancy after the trash gave way")
        assert h["trash_purged_for_space"] > 0 and h["repair_blocked"] == 0
        assert h["chunkservers_alive"] == 3
        for path, data in live.items():
            assert c.read(path) == data
            for ch in c.stat(path).chunks:
                assert len(files_of(cluster, ch.handle, ["chunkserver-1", "chunkserver-2",
                                                         "chunkserver-3"])) == 3
        c.put(io.BytesIO(rng.randbytes(CHUNK)), "/more")
    log = (cluster.dir / "master-1" / "daemon.log").read_text()
    assert "purged trash entry" in log
