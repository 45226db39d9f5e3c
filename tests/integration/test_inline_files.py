"""Small files inline in the metadata, with real daemons: one command to write, one read to
get, through the client and the CLI; growth into chunks and back; quotas; a full restart; and
linearizable reads under the leader lease when the leader is paused."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from gfs.client import Client
from gfs.errors import GfsError
from tests.integration.leader_checks import paused_leader_serves_no_stale_read

OPTS = {"master": {"election-timeout": 0.3, "inline-max": "64KiB", "replication": 1,
                   "chunk-size": "1MiB"},
        "chunkserver": {"heartbeat-interval": 0.3}}


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    c = make_module_cluster(masters=3, options=OPTS, start=False)
    c.add_chunkserver()
    c.up()
    return c


def test_a_small_file_is_one_command_and_reads_back(cluster, tmp_path):
    data = os.urandom(4096)
    with cluster.client() as c:
        before = {s["address"]: s["applied_index"] for s in c.master_statuses()}
        info = c.put(io.BytesIO(data), "/small")
        assert info.inline and info.chunks == [] and info.size == 4096
        leader = max(c.master_statuses(), key=lambda s: s["role"] == "leader")
        assert leader["applied_index"] - before[leader["address"]] <= 2   # one entry (+ a loop's)
        assert c.read("/small") == data
        assert c.read("/small", offset=100, length=50) == data[100:150]
        assert c.stat("/small").inline_data is None              # bytes only for a read
        out = tmp_path / "out"
        assert c.get("/small", str(out)) == 4096 and out.read_bytes() == data
        with pytest.raises(GfsError) as err:
            c.put(io.BytesIO(b"again"), "/small")
        assert err.value.code == "ALREADY_EXISTS"
        empty = c.put(io.BytesIO(b""), "/empty")
        assert empty.inline and c.read("/empty") == b""


def test_the_cli_puts_and_gets_inline(cluster, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"cli bytes " * 100)
    env = cluster.cli_env()
    for argv in (["put", str(src), "/cli"], ["get", "/cli", str(dst)]):
        subprocess.run([sys.executable, "-m", "cli.main", *argv], env=env, check=True,
                       capture_output=True, timeout=60)
    assert dst.read_bytes() == src.read_bytes()
    with cluster.client() as c:
        assert c.stat("/cli").inline


def test_a_file_grows_into_chunks_and_shrinks_back(cluster):
    big = os.urandom(200_000)
    with cluster.client() as c:
        c.put(io.BytesIO(b"tiny"), "/grow")
        info = c.put(io.BytesIO(big), "/grow", overwrite=True)
        assert not info.inline and len(info.chunks) == 1
        assert c.read("/grow") == big
        info = c.put(io.BytesIO(b"tiny again"), "/grow", overwrite=True)
        assert info.inline and c.read("/grow") == b"tiny again"


def test_a_client_offers_no_more_than_the_masters_take(cluster):
    with Client(cluster.master_addresses(), token=cluster.admin_token, inline_max=1 << 20) as c:
        data = os.urandom(100_000)                            # over the masters' 64 KiB
        info = c.put(io.BytesIO(data), "/refused-inline")
        assert not info.inline and c.read("/refused-inline") == data
        assert c.inline_max < 100_000


def test_inline_files_count_toward_quotas(cluster):
    with cluster.client() as admin:
        admin.user_add("quota-user")
        admin.user_set("quota-user", quota=(10_000, 0))
        token, _ = admin.token_create("t", principal="quota-user")
    with Client(cluster.master_addresses(), token=token) as c:
        c.put(io.BytesIO(b"x" * 6000), "/quota-user/a")
        with pytest.raises(GfsError) as err:
            c.put(io.BytesIO(b"x" * 6000), "/quota-user/b")
        assert err.value.code == "RESOURCE_EXHAUSTED"
        assert c.whoami()["used_bytes"] == 6000


def test_inline_files_survive_a_restart_of_every_master(cluster):
    data = os.urandom(30_000)
    with cluster.client() as c:
        c.put(io.BytesIO(data), "/durable")
    for d in cluster.daemons():
        if d["name"].startswith("master"):
            cluster.stop(d["name"])
    for d in cluster.daemons():
        if d["name"].startswith("master"):
            cluster.start(d["name"])
    cluster.wait_healthy()
    with cluster.client() as c:
        assert c.read("/durable") == data


def test_a_paused_leader_under_the_lease_never_serves_a_stale_read(make_cluster):
    c = make_cluster(options={"master": {"election-timeout": 0.3, "read-mode": "lease"}})
    with c.client() as client:
        client.mkdir("/before")
        client.stat("/before")                       # the lease is in use
    paused_leader_serves_no_stale_read(c)


def test_fsspec_writes_and_reads_inline_files(cluster):
    from gfs.filesystem import GfsFileSystem
    fs = GfsFileSystem(masters=cluster.master_addresses(), token=cluster.admin_token,
                       skip_instance_cache=True)
    data = os.urandom(10_000)
    with fs.open("/fsspec-small", "wb") as f:
        f.write(data)
    with cluster.client() as c:
        assert c.stat("/fsspec-small").inline
    assert fs.cat_file("/fsspec-small") == data
    assert fs.cat_file("/fsspec-small", start=10, end=20) == data[10:20]
    with fs.open("/fsspec-small", "rb") as f:
        f.seek(5000)
        assert f.read(100) == data[5000:5100]
