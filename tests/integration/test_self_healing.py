"""Self-healing with real daemons: re-replication after a chunkserver dies, surplus trimming when
it returns, bit flips found by reads and the scrubber and repaired, stale replicas, abandoned
uploads, trash, and the health/GC reports."""
from __future__ import annotations

import io
from contextlib import closing
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gfs.client import Client
from polling import wait_for
from gfs.errors import GfsError
from gfs.transfer import Channels, write_chunk

CHUNK = 1 << 20
BASE = {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 2, "gc-grace": 3}
CS = {"heartbeat-interval": 0.3}


def start(make_cluster, chunkservers=4, master=None, chunkserver=None):
    opts = {"master": {**BASE, **(master or {})}, "chunkserver": {**CS, **(chunkserver or {})}}
    c = make_cluster(masters=1, options=opts, start=False)
    for _ in range(chunkservers):
        c.add_chunkserver()
    c.up()
    return c


def files_of(cluster, handle: int, names: list[str] | None = None) -> dict[str, list[Path]]:
    """chunkserver name -> chunk data files of `handle` (any version) in its store."""
    out = {}
    for cs in cluster.spec["chunkservers"]:
        if names is None or cs["name"] in names:
            found = sorted(Path(cs["data"]).glob(f"hot/*/{handle:016x}-*.chunk"))
            if found:
                out[cs["name"]] = found
    return out


def name_of(cluster, address: str) -> str:
    return next(cs["name"] for cs in cluster.spec["chunkservers"] if cs["bind"] == address)


def put_files(c: Client, count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        data = rng.randbytes(rng.randint(CHUNK, 3 * CHUNK + 12345))
        c.put(io.BytesIO(data), f"/f{i}")
        files[f"/f{i}"] = data
    return files


def healthy(c: Client) -> dict | None:
    h = c.health()
    return h if h["status"] == "healthy" and not h["repair_in_flight"] else None


def assert_replicas_match(cluster, c: Client, files: dict[str, bytes], live: list[str]) -> None:
    """Every chunk has exactly its replication of intact copies on the live chunkservers."""
    for path, data in files.items():
        for ch in c.stat(path).chunks:
            holders = files_of(cluster, ch.handle, live)
            assert len(holders) == 3, f"{path} chunk {ch.index}: on {sorted(holders)}"
            expected = data[ch.index * CHUNK:(ch.index + 1) * CHUNK]
            for paths in holders.values():
                assert [p.read_bytes() for p in paths] == [expected]


def test_a_dead_chunkservers_chunks_are_re_replicated_and_trimmed_when_it_returns(make_cluster):
    cluster = start(make_cluster)
    names = [cs["name"] for cs in cluster.spec["chunkservers"]]
    with cluster.client() as c:
        files = put_files(c, 5, seed=1)
        wait_for(lambda: healthy(c), 20, "a healthy cluster")
        victim = name_of(cluster, c.stat("/f0").chunks[0].replicas[0])
        lost = sum(1 for p in files for ch in c.stat(p).chunks if files_of(cluster, ch.handle, [victim]))
        assert lost > 0
        cluster.kill(victim)
        live = [n for n in names if n != victim]
        h = wait_for(lambda: (lambda h: h if h["dead"] else None)(c.health()), 10, "death")
        assert h["status"] in ("degraded", "at-risk") and h["chunkservers_alive"] == 3
        h = wait_for(lambda: (lambda h: h if h["under_replicated"] == 0
                              and h["repair_in_flight"] == 0 and h["chunks"] else None)(c.health()),
                     60, "re-replication")
        assert h["repaired"] >= lost and h["status"] == "degraded"   # a server is still dead
        assert_replicas_match(cluster, c, files, live)
        for path, data in files.items():
            assert c.read(path) == data
        # It comes back with its old replicas: surplus, trimmed to 3 per chunk again.
        cluster.start(victim)
        wait_for(lambda: healthy(c), 30, "the returned server to be healthy")

        def trimmed():
            return all(len(files_of(cluster, ch.handle)) == 3
                       for p in files for ch in c.stat(p).chunks)
        wait_for(trimmed, 30, "surplus replicas to be trimmed")
        assert_replicas_match(cluster, c, files, names)
        # The recorded replica sets follow the trims (what a new leader would hand out first).
        wait_for(lambda: all(len(ch.replicas) == 3 for p in files for ch in c.stat(p).chunks),
                 10, "the recorded replica sets to follow the trims")


def flip_bits(path: Path, rng: random.Random, flips: int) -> None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for _ in range(flips):
            pos = rng.randrange(size)
            f.seek(pos)
            byte = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))


def test_bit_flips_are_detected_never_served_and_repaired(make_cluster):
    cluster = start(make_cluster, chunkserver={"scrub-rate": "64MiB", "scrub-interval": 1})
    rng = random.Random(7)
    with cluster.client() as c:
        files = put_files(c, 4, seed=2)
        wait_for(lambda: healthy(c), 20, "a healthy cluster")
        chunks = [(p, ch) for p in files for ch in c.stat(p).chunks]
        damaged = 0
        for i, (path, ch) in enumerate(chunks):
            holders = files_of(cluster, ch.handle)
            # Every chunk loses one replica's bytes; every third loses all three (in random
            # blocks, so each block is still intact somewhere, almost surely).
            victims = list(holders) if i % 3 == 0 else [rng.choice(list(holders))]
            for name in victims:
                flip_bits(holders[name][0], rng, rng.randint(1, 3))
                damaged += 1
        assert damaged >= len(chunks)
        # Reads never return wrong bytes while the damage is there.
        for path, data in files.items():
            assert c.read(path) == data
            assert c.read(path, offset=CHUNK - 100, length=CHUNK + 200) == \
                data[CHUNK - 100:2 * CHUNK + 100]
        # Healthy alone is not enough: until the scrubbers have read every replica, the master
        # may not know of some damage yet (a loaded run looked healthy with 4 chunks unscrubbed).
        seen = wait_for(lambda: (lambda h: h if h and h["repaired"] >= damaged else None)(
            healthy(c)), 90, "every corrupt replica found and repaired")
        assert seen["corrupt_replicas"] == 0
        live = [cs["name"] for cs in cluster.spec["chunkservers"]]
        wait_for(lambda: all(len(files_of(cluster, ch.handle)) == 3 for _, ch in chunks), 30,
                 "corrupt replicas deleted")
        assert_replicas_match(cluster, c, files, live)
        for path, data in files.items():
            assert c.read(path) == data


def test_stale_replicas_are_never_served_and_removed(make_cluster):
    cluster = start(make_cluster)
    with cluster.client() as c, closing(Channels()) as channels:
        # A chunk written at version 1 to three servers ...
        inode = c.create("/s")
        first = c.add_chunk(inode, 0)
        old = os.urandom(CHUNK)
        write_chunk(channels, list(first.replicas), first.handle, first.version, [old],
                    capability=first.capability)
        absent = name_of(cluster, first.replicas[-1])
        cluster.kill(absent)
        # ... is rewritten (the writer's retry) while one of them is down: version 2.
        second = c.add_chunk(inode, 0, exclude=[first.replicas[-1]])
        assert (second.handle, second.version) == (first.handle, first.version + 1)
        new = os.urandom(CHUNK)
        w = write_chunk(channels, list(second.replicas), second.handle, second.version, [new],
                        capability=second.capability)
        c.commit(inode, CHUNK, [(w.handle, w.length, w.checksum)])
        cluster.start(absent)
        stale = files_of(cluster, first.handle, [absent])
        assert stale and stale[absent][0].name.endswith("-1.chunk")
        for _ in range(20):             # reads keep returning version 2, never the stale bytes
            assert c.read("/s") == new
            assert first.replicas[-1] not in c.stat("/s").chunks[0].replicas
            time.sleep(0.1)
        wait_for(lambda: not files_of(cluster, first.handle, [absent]), 20,
                 "the stale replica to be deleted")
        assert c.read("/s") == new


def test_overwritten_files_replicas_on_a_returning_server_go_after_the_grace_period(make_cluster):
    cluster = start(make_cluster)
    with cluster.client() as c:
        files = put_files(c, 3, seed=3)
        absent = name_of(cluster, c.stat("/f0").chunks[0].replicas[0])
        held = [ch.handle for p in files for ch in c.stat(p).chunks
                if files_of(cluster, ch.handle, [absent])]
        cluster.kill(absent)
        fresh = {p: os.urandom(CHUNK + 1) for p in files}
        for p, data in fresh.items():
            c.put(io.BytesIO(data), p, overwrite=True)
        cluster.start(absent)
        wait_for(lambda: absent in {name_of(cluster, a) for a in
                                    [s["address"] for s in c.chunkservers() if s["alive"]]},
                 10, "the server to report again")
        # Alive from its first report piece on; planned once every piece is in.
        wait_for(lambda: {o["handle"] for o in c.gc_plan()["orphans"] if o["server"] ==
                          cluster.daemon(absent)["bind"]} >= set(held), 10,
                 "every replica of the overwritten files on it planned as an orphan")
        for p, data in fresh.items():
            assert c.read(p) == data
        wait_for(lambda: not any(files_of(cluster, h) for h in held), 30,
                 "orphans of the overwritten files to be deleted")


def test_abandoned_uploads_survive_the_grace_period_then_go(make_cluster):
    cluster = start(make_cluster, master={"gc-grace": 4})
    with cluster.client() as c, closing(Channels()) as channels:
        inode = c.create("/abandoned")
        alloc = c.add_chunk(inode, 0)
        write_chunk(channels, list(alloc.replicas), alloc.handle, alloc.version, [b"x" * 1000],
                    capability=alloc.capability)
        started = time.monotonic()
        plan = c.gc_plan(collect=True)
        assert plan["pending_uploads"] == 1
        out = gfs(cluster, "admin", "gc", "--plan").stdout
        assert "1 uploads in progress, 0 abandoned" in out
        while time.monotonic() - started < 3.0:
            assert len(files_of(cluster, alloc.handle)) == 3, "deleted before the grace period"
            time.sleep(0.3)
        wait_for(lambda: not files_of(cluster, alloc.handle), 30, "the abandoned chunks to go")
        assert time.monotonic() - started >= 3.0
        with pytest.raises(GfsError) as err:
            c.commit(inode, 1000, [(alloc.handle, 1000, 0)])
        assert err.value.code in ("NOT_FOUND", "FAILED_PRECONDITION")
        assert c.health()["pending_uploads"] == 0


def gfs(cluster, *args: str, check: bool = True, token: str | None = None) -> subprocess.CompletedProcess:
    """The CLI as the administrator, or with `token`."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=cluster.cli_env(token), timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_trash_restore_purge_and_retention(make_cluster):
    cluster = start(make_cluster, chunkservers=3,
                    master={"trash-retention": 10, "gc-grace": 1})
    data = os.urandom(2 * CHUNK + 77)
    with cluster.client() as admin:
        for name in ("alice", "bob"):
            admin.user_add(name)
        alice = admin.token_create("laptop", principal="alice")[0]
        bob = admin.token_create("laptop", principal="bob")[0]
    with cluster.client(token=alice) as c:
        c.mkdir("/alice/docs")
        c.put(io.BytesIO(data), "/alice/docs/report")
        handles = [ch.handle for ch in c.stat("/alice/docs/report").chunks]
        gfs(cluster, "rm", "/alice/docs/report", token=alice)
        assert not c.exists("/alice/docs/report")
        listing = json.loads(gfs(cluster, "trash", "ls", "--json", token=alice).stdout)
        assert [(e["path"], e["size"], e["user"]) for e in listing] == \
            [("/alice/docs/report", len(data), "alice")]
        assert json.loads(gfs(cluster, "trash", "ls", "--json", token=bob).stdout) == []
        assert gfs(cluster, "trash", "restore", "/alice/docs/report", token=bob,
                   check=False).returncode == 1
        time.sleep(2.5)                  # past the GC grace: trashed chunks are still referenced
        assert all(len(files_of(cluster, h)) == 3 for h in handles)
        out = gfs(cluster, "trash", "restore", "/alice/docs/report", token=alice).stdout
        assert "restored /alice/docs/report" in out
        assert c.read("/alice/docs/report") == data
        # A directory to the trash, restored elsewhere; the original path taken meanwhile.
        c.put(io.BytesIO(b"small"), "/alice/docs/note")
        c.delete("/alice/docs", recursive=True)
        c.mkdir("/alice/docs")
        err = gfs(cluster, "trash", "restore", "/alice/docs", check=False, token=alice)
        assert err.returncode == 1 and "already exists" in err.stderr
        gfs(cluster, "trash", "restore", "/alice/docs", "--to", "/alice/old/docs", token=alice)
        assert c.read("/alice/old/docs/report") == data and c.read("/alice/old/docs/note") == b"small"
        # Purge now: the chunks become garbage and go after the grace period.
        c.delete("/alice/old/docs/report")
        gfs(cluster, "trash", "purge", "--yes", token=alice)
        assert c.trash_list() == []
        wait_for(lambda: not any(files_of(cluster, h) for h in handles), 30, "purged chunks to go")
        # Retention: an entry left alone is purged by the leader after 6 s.
        c.delete("/alice/old/docs/note")
        assert len(c.trash_list()) == 1
        wait_for(lambda: c.trash_list() == [], 30, "the retention to purge the trash")
        assert c.delete("/alice/old", recursive=True, skip_trash=True) == 0


def test_health_and_gc_reports_on_the_cli_and_metrics(make_cluster):
    import urllib.request
    cluster = start(make_cluster, chunkservers=3)
    with cluster.client() as c:
        c.put(io.BytesIO(os.urandom(CHUNK)), "/x")
        h = wait_for(lambda: healthy(c), 20, "healthy")
        assert h["chunks"] == 1 and h["chunkservers_alive"] == 3
    out = gfs(cluster, "admin", "health").stdout
    assert "status        healthy" in out and "3 alive, 0 dead" in out
    assert json.loads(gfs(cluster, "admin", "health", "--json").stdout)["status"] == "healthy"
    gfs(cluster, "admin", "health", "--check")
    plan = json.loads(gfs(cluster, "admin", "gc", "--plan", "--json").stdout)
    assert plan["total"] == 0 and plan["grace_s"] == 3
    metrics = cluster.spec["masters"][0]["metrics"]
    body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    assert "gfs_health_under_replicated 0.0" in body and "gfs_health_chunks 1.0" in body
    cluster.kill("chunkserver-1")
    wait_for(lambda: gfs(cluster, "admin", "health", "--check", check=False).returncode == 2,
             15, "health --check to fail")
    # Replication 3 on 2 live chunkservers: the repair is blocked, and health says why.
    with cluster.client() as c:
        h = wait_for(lambda: (lambda h: h if h["repair_blocked"] else None)(c.health()), 15,
                     "the repair to be reported blocked")
    assert h["repair_blocked_reason"] == "too_few_chunkservers" and h["eta_s"] == -1
    assert h["chunkservers_needed"] == 1
    out = gfs(cluster, "admin", "health").stdout
    assert "blocked       1 chunks: 1 chunk held by every live chunkserver: needs 1 more " \
           "chunkserver" in out, out
    body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    assert 'gfs_health_repair_blocked{reason="too_few_chunkservers"} 1.0' in body


def test_a_killed_chunkserver_is_reported_silent_before_it_counts_dead(make_cluster):
    """`gfs health` says at once (three missed heartbeats) that a chunkserver went quiet,
    instead of counting it alive until --dead-after."""
    import urllib.request
    cluster = start(make_cluster, chunkservers=3, master={"dead-after": 60})
    victim = cluster.spec["chunkservers"][0]
    with cluster.client() as c:
        wait_for(lambda: c.health()["chunkservers_alive"] == 3, 20, "three chunkservers")
        assert c.health()["silent"] == []
        killed = time.monotonic()
        cluster.kill(victim["name"])
        h = wait_for(lambda: (lambda h: h if h["silent"] else None)(c.health()), 15, "silence")
    assert time.monotonic() - killed < 10
    assert [s["address"] for s in h["silent"]] == [victim["bind"]]
    assert h["silent"][0]["for_s"] >= 0.9 and h["dead"] == [] and h["chunkservers_alive"] == 3
    out = gfs(cluster, "admin", "health").stdout
    assert f"3 alive (1 silent: {victim['bind']} for " in out and ", 0 dead" in out, out
    as_json = json.loads(gfs(cluster, "admin", "health", "--json").stdout)
    assert [s["address"] for s in as_json["silent"]] == [victim["bind"]]
    metrics = cluster.spec["masters"][0]["metrics"]
    body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    assert "gfs_health_chunkservers_silent 1.0" in body


def test_a_new_leader_waits_for_reports_and_copies_nothing_that_is_not_lost(make_cluster):
    opts = {"master": {**BASE, "dead-after": 4}, "chunkserver": CS}
    cluster = make_cluster(masters=3, options=opts, start=False)
    for _ in range(4):
        cluster.add_chunkserver()
    cluster.up()
    with cluster.client() as c:
        files = put_files(c, 4, seed=4)
        wait_for(lambda: healthy(c), 20, "a healthy cluster")
        old = cluster.leader()
        cluster.kill(old)
        new = wait_for(lambda: (lambda n: n if n and n != old else None)(cluster.leader()), 20,
                       "a new leader")
        first = wait_for(lambda: c.health(), 10, "the new leader's health")
        assert first["status"] == "starting" and not first["replica_map_complete"]
        wait_for(lambda: healthy(c), 30, "the new leader to see every replica")
        cluster.start(old)
        time.sleep(2)
        h = c.health()
        assert cluster.leader() == new
        assert (h["repaired"], h["under_replicated"], h["surplus_replicas"]) == (0, 0, 0)
        assert all(len(files_of(cluster, ch.handle)) == 3 for p in files for ch in c.stat(p).chunks)
