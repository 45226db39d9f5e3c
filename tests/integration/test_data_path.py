"""The data path with real daemons: 3 masters, 3–4 chunkservers, small chunks so that files of
a few MiB span many chunks."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from gfs.aio import AsyncClient
from gfs.client import MASTER_CALLS
from gfs.errors import GfsError
from raw_chunks import read_replica

CHUNK = 1 << 20
OPTS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3,
                   "gc-grace": 2},
        "chunkserver": {"heartbeat-interval": 0.3}}


@pytest.fixture
def cluster(make_cluster):
    c = make_cluster(masters=3, options=OPTS, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.up()
    return c


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345])
def test_put_get_roundtrip_by_size(cluster, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "src"
    src.write_bytes(data)
    with cluster.client() as c:
        info = c.put(str(src), f"/f{size}")
        assert info.size == size and len(info.chunks) == -(-size // CHUNK)
        assert all(len(set(ch.replicas)) == 3 for ch in info.chunks)
        # Master calls of a put (the leader known by now): a create that also allocates chunk
        # 0, one AddChunk per further chunk, and a commit that describes the file — no Stat.
        counted = [0]
        token = MASTER_CALLS.set(counted)
        try:
            again = c.put(str(src), f"/f{size}", overwrite=True)
        finally:
            MASTER_CALLS.reset(token)
        assert counted[0] == (1 if again.inline else 2 + max(len(again.chunks) - 1, 0))
        assert (again.path, again.size, again.type, len(again.chunks)) == (
            f"/f{size}", size, "file", len(info.chunks))
        assert again.inode != info.inode and again.mtime_ms >= info.mtime_ms and again.owner
        out = tmp_path / "out"
        assert c.get(f"/f{size}", str(out)) == size
        assert sha(out.read_bytes()) == sha(data)
        buf = io.BytesIO()                       # a non-seekable-path sink, in order
        c.get(f"/f{size}", buf, parallel=1)
        assert sha(buf.getvalue()) == sha(data)
        if size > 10:
            for off, n in [(0, 1), (size // 2, 7), (CHUNK - 3, 10), (size - 5, 5), (3, size - 3)]:
                assert c.read(f"/f{size}", off, n) == data[off:off + n]


def test_stream_upload_and_replace(cluster):
    data = os.urandom(3 * CHUNK + 99)
    with cluster.client() as c:
        c.put(io.BufferedReader(io.BytesIO(data)), "/stream")    # read as a stream
        assert c.read("/stream") == data
        with pytest.raises(GfsError) as err:
            c.put(io.BytesIO(b"x"), "/stream")
        assert err.value.code == "ALREADY_EXISTS"
        c.put(io.BytesIO(b"new"), "/stream", overwrite=True)
        assert c.read("/stream") == b"new"


def test_concurrent_clients(cluster):
    blobs = {f"/c/{i}": os.urandom((i + 1) * 300_000) for i in range(8)}
    with cluster.client() as c:
        c.mkdir("/c")
    errors = []

    def upload(path, data):
        try:
            with cluster.client() as c:
                c.put(io.BytesIO(data), path)
                assert c.read(path) == data
        except Exception as exc:   # collected and asserted below
            errors.append(exc)

    ts = [threading.Thread(target=upload, args=kv) for kv in blobs.items()]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_asyncio_client(cluster):
    async def main():
        async with AsyncClient(cluster.master_addresses(), token=cluster.admin_token) as c:
            await c.mkdir("/aio")
            data = os.urandom(2 * CHUNK + 5)
            await asyncio.gather(*(c.put(io.BytesIO(data), f"/aio/{i}") for i in range(3)))
            got = await asyncio.gather(*(c.read(f"/aio/{i}") for i in range(3)))
            assert all(g == data for g in got)
            assert [e.path for e in await c.list("/aio")] == ["/aio/0", "/aio/1", "/aio/2"]
            # A brief page: the same entries without their chunk lists (each file has 3).
            full, _ = await c.list_page("/aio")
            brief, _ = await c.list_page("/aio", brief=True)
            assert [len(e.chunks) for e in full] == [3, 3, 3]
            assert [e.chunks for e in brief] == [[], [], []]
            assert [replace(e, chunks=[]) for e in full] == brief
    asyncio.run(main())


def test_asyncio_stat_and_put_inline_run_on_the_loop_and_follow_a_new_leader(make_cluster):
    """AsyncClient.stat / put_inline go over grpc.aio channels on the running loop: one master
    call each (MASTER_CALLS counts them), and after the leader is killed they find the new one
    with the same retries as the blocking client."""
    cluster = make_cluster(masters=3, name="inline", options={
        "master": {**OPTS["master"], "inline-max": "64KiB"}})

    async def main():
        async with AsyncClient(cluster.master_addresses(), token=cluster.admin_token) as c:
            await c.mkdir("/aio-small")
            counted = [0]
            MASTER_CALLS.set(counted)
            info = await c.put_inline(b"tiny", "/aio-small/a", xattrs=lambda: {"k": "v"})
            assert (info.inline, info.size, info.xattrs, counted[0]) == (True, 4, {"k": "v"}, 1)
            got = await c.stat("/aio-small/a", for_read=True)
            assert (got.inline_data, got.xattrs, counted[0]) == (b"tiny", {"k": "v"}, 2)
            with pytest.raises(GfsError) as err:
                await c.put_inline(b"again", "/aio-small/a")          # no overwrite asked
            assert err.value.code == "ALREADY_EXISTS"
            cluster.kill(cluster.leader())
            await c.put_inline(b"after", "/aio-small/a", overwrite=True)
            assert (await c.stat("/aio-small/a", for_read=True)).inline_data == b"after"
            with pytest.raises(GfsError) as err:
                await c.stat("/aio-small/missing")
            assert err.value.code == "NOT_FOUND"
    asyncio.run(main())


def test_read_with_a_chunkserver_killed(cluster):
    data = os.urandom(4 * CHUNK + 1)
    with cluster.client() as c:
        c.put(io.BytesIO(data), "/k")
        cluster.kill("chunkserver-1")
        assert c.read("/k") == data


def test_corrupt_chunk_file_is_never_served(cluster):
    data = os.urandom(2 * CHUNK)
    with cluster.client() as c:
        info = c.put(io.BytesIO(data), "/corrupt")
        first = info.chunks[0]
        victim = cluster.daemon("chunkserver-1")
        files = list(Path(victim["data"]).rglob(f"{first.handle:016x}-*.chunk"))
        assert len(files) == 1
        raw = bytearray(files[0].read_bytes())
        raw[100_000] ^= 0x01
        files[0].write_bytes(bytes(raw))
        for _ in range(3):                       # whichever replica is tried first
            assert c.read("/corrupt") == data
        with pytest.raises(grpc.RpcError) as err:
            read_replica(victim["bind"], first.handle, first.version,
                             c.stat("/corrupt", for_read=True).chunks[0].capability)
        assert err.value.code() == grpc.StatusCode.DATA_LOSS


def test_chunkserver_killed_mid_put_never_leaves_a_partial_file(cluster, tmp_path):
    cluster.add_chunkserver()
    cluster.start("chunkserver-4")
    cluster.wait_healthy()
    data = os.urandom(40 * CHUNK)
    src = tmp_path / "big"
    src.write_bytes(data)
    outcome = {}

    def upload():
        try:
            with cluster.client() as c:
                outcome["info"] = c.put(str(src), "/midput", parallel=2)
        except GfsError as err:
            outcome["error"] = err

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(0.4)
    cluster.kill("chunkserver-2")
    t.join(120)
    killed = cluster.daemon("chunkserver-2")["bind"]
    with cluster.client() as c:
        if "error" in outcome:
            assert not c.exists("/midput")
        # Three chunkservers are left for replication 3: the put retries around the dead one.
        assert "info" in outcome, outcome
        if "info" in outcome:
            assert c.read("/midput") == data
            for ch in c.stat("/midput", for_read=True).chunks:
                live = [r for r in ch.replicas if r != killed]
                assert len(set(live)) >= 2
                for r in live:
                    if r in cluster.chunkserver_addresses():
                        try:
                            assert read_replica(r, ch.handle, ch.version, ch.capability) == data[ch.index_offset:ch.index_offset + ch.length]
                        except grpc.RpcError as err:
                            assert r == killed, err


def test_client_killed_mid_upload_leaves_no_visible_file(cluster, tmp_path):
    script = (
        "import os, sys\n"
        "from gfs.client import Client\n"
        "class Slow:\n"
        "    n = 0\n"
        "    def read(self, k):\n"
        "        self.n += 1\n"
        "        if self.n == 4: print('started', flush=True)\n"
        "        import time; time.sleep(0.05)\n"
        "        return os.urandom(min(k, 65536))\n"
        "    def seekable(self): return False\n"
        f"Client({cluster.master_addresses()!r}, token={cluster.admin_token!r})"
        ".put(Slow(), '/abandoned')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with cluster.client() as c:
        assert not c.exists("/abandoned")
        assert [e.path for e in c.list("/")] == []


def gfs(*args, env, stdin=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin,
                          capture_output=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"gfs {' '.join(args)}: {proc.stderr.decode()}")
    return proc


def test_cli_put_get_cat_and_errors(cluster, tmp_path):
    env = cluster.cli_env()
    data = os.urandom(3 * CHUNK + 7)
    (tmp_path / "a").write_bytes(data)
    info = json.loads(gfs("put", "--json", str(tmp_path / "a"), "/a", env=env).stdout)
    assert info["size"] == len(data) and info["replication"] == 3
    assert gfs("cat", "/a", env=env).stdout == data
    assert gfs("get", "/a", "-", env=env).stdout == data
    gfs("get", "/a", str(tmp_path / "b"), env=env)
    assert (tmp_path / "b").read_bytes() == data
    gfs("mkdir", "/dir", env=env)
    gfs("put", str(tmp_path / "a"), "/dir", env=env)           # into a directory
    (tmp_path / "into").mkdir()
    gfs("get", "/dir/a", str(tmp_path / "into"), env=env)      # into a local directory
    assert (tmp_path / "into" / "a").read_bytes() == data
    gfs("put", "-", "/piped", env=env, stdin=b"from stdin")
    assert gfs("cat", "/piped", env=env).stdout == b"from stdin"
    assert gfs("get", "--offset", "5", "--length", "3", "/piped", "-", env=env).stdout == b"std"
    assert gfs("put", "--progress", str(tmp_path / "a"), "/p", env=env).returncode == 0
    ls = gfs("ls", "-l", "/", env=env).stdout.decode()
    assert "3.0 MiB" in ls
    for args, word, extra in [
        (("put", str(tmp_path / "missing"), "/x"), "not found", {}),
        (("get", "/missing", str(tmp_path / "y")), "not found", {}),
        (("put", "-r", "5", str(tmp_path / "a"), "/r5"), "failed precondition", {}),
        (("--timeout", "1", "ls", "/"), "unavailable", {"GFS_MASTERS": "127.0.0.1:1"}),
    ]:
        p = gfs(*args, env={**env, **extra}, check=False)
        err = p.stderr.decode()
        assert p.returncode == 1 and err.startswith("gfs: " + word), (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "not enough chunkservers" in gfs("put", "-r", "5", str(tmp_path / "a"), "/r5",
                                            env=env, check=False).stderr.decode()
    with cluster.client() as c:
        assert not c.exists("/r5")


def test_chunkservers_serve_metrics_and_json_logs(cluster):
    import urllib.request
    with cluster.client() as c:
        c.put(io.BytesIO(os.urandom(CHUNK)), "/m")
        c.read("/m")
    moved = 0
    for d in cluster.daemons():
        if "bind" not in d:
            continue
        body = urllib.request.urlopen(f"http://{d['metrics']}/metrics", timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith('gfs_chunkserver_bytes_total{direction="in"}'):
                moved += float(line.split()[-1])
        lines = (Path(d["data"]) / "daemon.log").read_text().splitlines()
        assert lines and all(json.loads(line)["daemon"] == "chunkserver" for line in lines)
    assert moved == 3 * CHUNK        # every replica received the chunk once


def chunk_files(cluster, handle: int) -> list[Path]:
    return [p for c in cluster.spec["chunkservers"]
            for p in Path(c["data"]).rglob(f"{handle:016x}-*.chunk")]


def test_unreferenced_chunks_are_deleted_after_the_grace_period(cluster):
    keep, drop = os.urandom(2 * CHUNK), os.urandom(2 * CHUNK + 1)
    with cluster.client() as c:
        c.put(io.BytesIO(keep), "/keep")
        dropped = c.put(io.BytesIO(drop), "/drop").chunks
        replaced = c.put(io.BytesIO(drop), "/replace").chunks
        c.put(io.BytesIO(keep), "/replace", overwrite=True)
        assert all(len(chunk_files(cluster, ch.handle)) == 3 for ch in dropped + replaced)
        c.delete("/drop", skip_trash=True)
        assert all(len(chunk_files(cluster, ch.handle)) == 3 for ch in dropped)   # grace: 2 s
        deadline = time.monotonic() + 40
        while any(chunk_files(cluster, ch.handle) for ch in dropped + replaced):
            assert time.monotonic() < deadline, "unreferenced chunks were never deleted"
            time.sleep(0.5)
        assert c.read("/keep") == keep and c.read("/replace") == keep
        for ch in c.stat("/keep").chunks + c.stat("/replace").chunks:
            assert len(chunk_files(cluster, ch.handle)) == 3
