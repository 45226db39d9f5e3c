"""Disaster recovery with real daemons: a backup taken from a running cluster under load, every
master's disk lost, a new group restored from the backup — every file acknowledged before the
backup reads back byte for byte, chunks written after it are left to garbage collection, and
the cluster takes new writes."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from gfs.errors import GfsError
from gfs.backupfile import header_bytes
from one_master import paths_on
from polling import wait_for

CHUNK = 1 << 20
OPTIONS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3},
           "chunkserver": {"heartbeat-interval": 0.3}}


def gfs(cluster, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=cluster.cli_env(token), timeout=300)


def chunk_files(cluster, handle: int) -> list[Path]:
    return [p for c in cluster.spec["chunkservers"]
            for p in Path(c["data"]).rglob(f"{handle:016x}-*.chunk")]


def held_handles(cluster) -> set[int]:
    """Every chunk handle some chunkserver has a file of."""
    return {int(p.name.split("-")[0], 16) for c in cluster.spec["chunkservers"]
            for p in Path(c["data"]).rglob("*.chunk")}


def test_restore_every_master_from_a_backup_after_losing_their_disks(make_cluster, tmp_path):
    cluster = make_cluster(masters=3, options=OPTIONS, start=False)
    for _ in range(3):
        cluster.add_chunkserver()
    cluster.up()
    before = {f"/keep/f{i}": os.urandom(i * 300_000 + 17) for i in range(6)}   # up to 5 chunks
    with cluster.client() as admin:
        admin.user_add("alice")
        alice_token = admin.token_create("laptop", principal="alice")[0]
        admin.mkdir("/keep")
        for path, data in before.items():
            admin.put(io.BytesIO(data), path)
        admin.set_visibility("/keep/f1", "public")

    # The backup is taken while writes go on: they are neither stalled nor failed by it.
    stop, written, failures = threading.Event(), [], []

    def load() -> None:
        with cluster.client() as c:
            i = 0
            while not stop.is_set():
                try:
                    c.put(io.BytesIO(b"x" * 1000), f"/during-{i}")
                    written.append(i)
                except GfsError as err:
                    failures.append(err)
                i += 1

    writer = threading.Thread(target=load)
    writer.start()
    backup = tmp_path / "meta.gfsbackup"
    try:
        saved = gfs(cluster, "admin", "snapshot", "save", str(backup), "--json")
    finally:
        stop.set()
        writer.join()
    assert saved.returncode == 0, saved.stderr
    header = json.loads(saved.stdout)
    assert backup.stat().st_size == len(header_bytes(header)) + header["size"]
    assert written and not failures
    assert gfs(cluster, "admin", "snapshot", "verify", str(backup)).returncode == 0
    refused = gfs(cluster, "admin", "snapshot", "save", str(tmp_path / "x"), token=alice_token)
    assert refused.returncode == 1 and "administrator" in refused.stderr
    assert not (tmp_path / "x").exists()

    with cluster.client() as admin:            # written after the backup: not in it
        after = admin.put(io.BytesIO(os.urandom(2 * CHUNK)), "/after.bin")
    after_handles = [c.handle for c in after.chunks]

    # Every master's disk is lost.
    cluster.down()
    for m in cluster.spec["masters"]:
        shutil.rmtree(m["data"])
    for m in cluster.spec["masters"]:
        done = gfs(cluster, "admin", "snapshot", "restore", str(backup), "--data", m["data"])
        assert done.returncode == 0, done.stderr
    again = gfs(cluster, "admin", "snapshot", "restore", str(backup), "--data",
                cluster.spec["masters"][0]["data"])
    assert again.returncode == 1 and "--force" in again.stderr
    cluster.up(timeout=60)

    with cluster.client() as admin:
        for path, data in before.items():
            assert admin.read(path) == data, path
        names = {e.path for e in admin.list("/")}
        assert "/after.bin" not in names                     # after the backup: not restored
        assert {f"/during-{i}" for i in written[:1]} <= names  # acknowledged before: kept
        # Chunks written after the backup are orphans now: left for garbage collection (grace
        # period), not deleted at once.
        for handle in after_handles:
            assert chunk_files(cluster, handle), handle
        plan = wait_for(lambda: admin.gc_plan(), 10, "a GC plan")
        orphan = {o["handle"] for o in plan["orphans"] if o["reason"] == "orphan"}
        assert set(after_handles) <= orphan or not plan["replica_map_complete"]
        assert all(o["delete_in_s"] > 0 for o in plan["orphans"] if o["handle"] in after_handles)
        # New writes take new chunk handles, above every one a chunkserver holds (no collision
        # with the orphans, whoever wrote them after the backup), and read back.
        held = held_handles(cluster)
        assert set(after_handles) <= held
        fresh = os.urandom(CHUNK + 3)
        info = admin.put(io.BytesIO(fresh), "/fresh.bin")
        assert min(c.handle for c in info.chunks) > max(held)
        assert admin.read("/fresh.bin") == fresh
    with cluster.client(token=alice_token) as alice:      # identities came back too
        assert alice.whoami()["user"] == "alice"
        assert alice.read("/keep/f1") == before["/keep/f1"]

    # A master that loses its disk now — before the new group's first log compaction — comes
    # back empty and is sent the restored store: it must not replay the new log onto nothing.
    wiped = next(m["name"] for m in cluster.spec["masters"] if m["name"] != cluster.leader())
    cluster.kill(wiped)
    shutil.rmtree(cluster.daemon(wiped)["data"])
    cluster.start(wiped)
    want = set(before) | {"/keep", "/fresh.bin"}          # restored, and written since
    wait_for(lambda: want <= paths_on(cluster, wiped, "/keep") | paths_on(cluster, wiped),
             60, "the wiped master to hold the restored files", 0.2)


def test_a_damaged_backup_is_refused(make_cluster, tmp_path):
    cluster = make_cluster(masters=1, options=OPTIONS)
    backup = tmp_path / "b"
    assert gfs(cluster, "admin", "snapshot", "save", str(backup)).returncode == 0
    data = bytearray(backup.read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "bad").write_bytes(bytes(data))
    bad = gfs(cluster, "admin", "snapshot", "verify", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "corrupt" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "short").write_bytes(bytes(data[:len(data) // 2]))
    short = gfs(cluster, "admin", "snapshot", "restore", str(tmp_path / "short"), "--data",
                str(tmp_path / "m"))
    assert short.returncode == 1 and "truncated" in short.stderr
    assert not (tmp_path / "m" / "meta").exists()
    (tmp_path / "junk").write_bytes(b"hello")
    junk = gfs(cluster, "admin", "snapshot", "verify", str(tmp_path / "junk"))
    assert junk.returncode == 1 and "not a gfs metadata backup" in junk.stderr
