"""`--insecure-no-auth` (gfs/auth/insecure.py), end to end with real daemons: with the flag an
anonymous client puts and gets, and the mode shows in status, health, /metrics and the logs;
without it the same client is refused, and a secure cluster does not take work from, or give
work to, a daemon that runs insecure."""
from __future__ import annotations

import io
import json
import os
import time
import urllib.request

import grpc
import pytest

from cli.localcluster import LocalCluster
from tests.integration.cli_run import gfs
from gfs.client import Client
from gfs.errors import FailedPrecondition, GfsError
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc

pytestmark = pytest.mark.timeout(180)


def metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not on {address}/metrics")


def test_insecure_cluster_serves_anonymous_clients(tmp_path):
    data = tmp_path / "cluster"
    env = {**os.environ, "GFS_CONFIG_DIR": str(tmp_path / "cfg"), "GFS_TOKEN": "",
           "GFS_INSECURE_NO_AUTH": "1"}                  # the environment variable of the flag
    for k in ("GFS_MASTERS", "GFS_TLS_CA"):
        env.pop(k, None)
    try:
        up = gfs(env, "cluster", "up", "--masters", "1", "--chunkservers", "2",
                 "--data", str(data))
        assert "--insecure-no-auth" in up.stderr
        cluster = LocalCluster(data)
        assert cluster.insecure_no_auth
        # An anonymous client (no token at all) writes, reads and lists like an administrator.
        masters = ",".join(cluster.master_addresses())
        src = tmp_path / "src"
        src.write_bytes(os.urandom(300_000))
        anon = {**env, "GFS_MASTERS": masters}
        gfs(anon, "put", "-r", "2", str(src), "/f")
        out = tmp_path / "out"
        gfs(anon, "get", "/f", str(out))
        assert out.read_bytes() == src.read_bytes()
        with Client(cluster.master_addresses(), token="") as c:
            c.mkdir("/d")
            c.put(io.BytesIO(b"z" * 5000), "/d/g", replication=2)
            assert c.read("/d/g") == b"z" * 5000
            assert c.health()["auth_mode"] == "insecure-no-auth"
        # The mode shows everywhere: status, health, /metrics, a JSON warning in every log.
        status = gfs(env, "cluster", "status", "--data", str(data), "--json")
        assert [r["auth"] for r in json.loads(status.stdout)] == ["insecure-no-auth"] * 3
        assert "--insecure-no-auth" in status.stderr
        assert "NOTHING is authenticated" in gfs(anon, "admin", "health").stdout
        for d in cluster.daemons():
            assert metric(d["metrics"], "gfs_insecure_no_auth") == 1.0
            warnings = [json.loads(line) for line in
                        (data / d["name"] / "daemon.log").read_text().splitlines()
                        if '"insecure_no_auth"' in line]
            assert warnings and warnings[0]["level"] == "warning", d["name"]
        # Restarting it needs the flag again: the insecure mode is never implied.
        env.pop("GFS_INSECURE_NO_AUTH")
        again = gfs(env, "cluster", "up", "--data", str(data), check=False)
        assert again.returncode != 0 and "--insecure-no-auth" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    finally:
        LocalCluster(data).down()


def test_secure_cluster_refuses_anonymous_and_insecure_peers(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.create(masters=1, chunkservers=2)
    try:
        cluster.up(timeout=60)
        assert cluster.status()[0]["auth"] == "secure"
        with cluster.client() as admin:
            admin.mkdir("/open")
            admin.put(io.BytesIO(b"a" * 3000), "/open/f", replication=2)
            info = admin.stat("/open/f", for_read=True)
        # The very client the insecure cluster served is refused here.
        with Client(cluster.master_addresses(), token="") as anon:
            with pytest.raises(GfsError) as err:
                anon.put(io.BytesIO(b"b" * 3000), "/open/g", replication=2)
            assert err.value.code in ("PERMISSION_DENIED", "NOT_FOUND"), err.value
            with pytest.raises(GfsError):
                anon.read("/open/f")
        with cluster.client() as admin:
            assert not admin.exists("/open/g")
        # A chunkserver serves no read without a capability (as an insecure master sends).
        chunk = info.chunks[0]
        with grpc.insecure_channel(chunk.replicas[0]) as ch:
            with pytest.raises(grpc.RpcError) as rpc_err:
                list(cpb_grpc.ChunkserverStub(ch).ReadChunk(
                    cpb.ReadRequest(handle=chunk.handle, version=chunk.version, offset=0,
                                    length=100), timeout=5))
            assert rpc_err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A chunkserver started with --insecure-no-auth sends unsigned heartbeats: the secure
        # master never registers it, so it is never given a chunk.
        name = cluster.add_chunkserver(options={"insecure-no-auth": True})
        cluster.start(name)
        address = cluster.daemon(name)["bind"]
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert address not in cluster.registered_chunkservers()
            time.sleep(0.5)
        log = (tmp_path / "cluster" / name / "daemon.log").read_text()
        assert "\"insecure_no_auth\": true" in log and "no daemon signature" in log
        assert metric(cluster.daemon("master-1")["metrics"], "gfs_insecure_no_auth") == 0.0
        # A secure cluster is never restarted insecure.
        with pytest.raises(FailedPrecondition, match="created secure"):
            LocalCluster(tmp_path / "cluster", insecure_no_auth=True).up()
    finally:
        cluster.down()
