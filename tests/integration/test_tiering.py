"""Storage classes and tier moves with real daemons: cold files compressed in the cold tier and
read back byte-identical (ranges included), `auto` files going cold when idle and warm again
when read, classes inherited from directories, and moves back to hot."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from gfs.client import Client
from polling import wait_for

CHUNK = 1 << 20
OPTS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 2,
                   "auto-cold-after": 8, "auto-warm-reads": 2, "auto-warm-window": 60},
        "chunkserver": {"heartbeat-interval": 0.3}}


def text_like(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def tiers(c: Client, path: str) -> set[str]:
    st = c.tier_status(path)
    found = [r["tier"] for ch in st["chunks"] for r in ch["replicas"]]
    return set(found) if len(found) == 3 * len(st["chunks"]) else {"incomplete"}


def test_storage_classes_move_chunks_between_tiers(make_cluster):
    cluster = make_cluster(masters=1, options=OPTS, start=False)
    for _ in range(3):
        cluster.add_chunkserver()
    cluster.up()
    cold_data, auto_data, hot_data = text_like(3 * CHUNK + 123, 1), text_like(2 * CHUNK, 2), \
        os.urandom(CHUNK)
    with cluster.client() as c:
        c.mkdir("/archive")
        c.set_class("/archive", "cold")
        c.mkdir("/archive/2026")                              # inherits cold
        c.put(io.BytesIO(cold_data), "/archive/2026/log.txt")
        c.put(io.BytesIO(auto_data), "/auto.txt", storage_class="auto")
        c.put(io.BytesIO(hot_data), "/hot.bin")
        assert c.stat("/archive/2026/log.txt").storage_class == "cold"
        wait_for(lambda: tiers(c, "/archive/2026/log.txt") == {"cold"}, 30, "cold tier")
        stored = sum(p.stat().st_size for cs in cluster.spec["chunkservers"]
                     for p in Path(cs["data"]).glob("cold/*/*.zst"))
        assert 0 < stored < 3 * len(cold_data) * 0.6          # compressed, 3 replicas
        st = c.tier_status("/archive/2026/log.txt")             # the leader knows it too
        assert (st["stored_bytes"], st["replica_bytes"]) == (stored, 3 * len(cold_data))
        assert c.tier_status("/archive")["stored_bytes"] == stored
        assert c.read("/archive/2026/log.txt") == cold_data
        for off, n in ((0, 10), (CHUNK - 5, 10), (CHUNK + 70_000, 300_000), (3 * CHUNK, 123)):
            assert c.read("/archive/2026/log.txt", offset=off, length=n) == cold_data[off:off + n]
        # auto: idle past 8 s -> cold; read twice -> hot again; hot stays hot throughout.
        wait_for(lambda: tiers(c, "/auto.txt") == {"cold"}, 30, "the idle auto file to go cold")
        assert tiers(c, "/hot.bin") == {"hot"}
        assert c.read("/auto.txt") == auto_data
        time.sleep(3)
        assert tiers(c, "/auto.txt") == {"cold"}                 # one read is not enough
        assert c.read("/auto.txt") == auto_data
        wait_for(lambda: tiers(c, "/auto.txt") == {"hot"}, 30, "the read auto file to warm up")
        status = c.tier_status("/auto.txt")
        assert status["recent_reads"] >= 2 and status["target_tier"] == "hot"
        # Back to hot by class; the directory summary follows.
        assert c.set_class("/archive", "hot", recursive=True) == 3
        wait_for(lambda: tiers(c, "/archive/2026/log.txt") == {"hot"}, 30, "the move back")
        assert c.read("/archive/2026/log.txt") == cold_data
        summary = c.tier_status("/")
        assert summary["files"] == 3 and summary["cold_bytes"] == 0 or summary["moving_bytes"] > 0
    env = cluster.cli_env()
    run = lambda *a: subprocess.run([sys.executable, "-m", "cli.main", *a], capture_output=True,
                                    text=True, env=env, timeout=60)
    out = run("tier", "status", "/hot.bin")
    assert out.returncode == 0 and "class hot" in out.stdout and "hot" in out.stdout
    assert json.loads(run("tier", "status", "--json", "/archive").stdout)["files"] == 1
    bad = run("tier", "set", "/hot.bin", "none")
    assert bad.returncode == 1 and "is a file" in bad.stderr
