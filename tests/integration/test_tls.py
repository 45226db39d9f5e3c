"""`gfs cluster up --tls`: every daemon serves gRPC over TLS with a certificate from a local CA;
the CLI and the client verify it, a plaintext client gets nowhere."""
from __future__ import annotations

import io
import os

import grpc
import pytest

from cli.localcluster import LocalCluster
from tests.integration.cli_run import gfs
from gfs.client import Client
from gfs.errors import GfsError
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc


def test_cluster_up_tls_serves_only_tls(tmp_path):
    data = tmp_path / "cluster"
    env = {**os.environ, "GFS_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("GFS_MASTERS", None)
    env.pop("GFS_TLS_CA", None)
    try:
        gfs(env, "cluster", "up", "--tls", "--masters", "1", "--chunkservers", "2",
            "--data", str(data))
        cluster = LocalCluster(data)
        assert cluster.tls is not None and os.stat(cluster.tls.key).st_mode & 0o077 == 0
        src = tmp_path / "src"
        src.write_bytes(os.urandom(300_000))
        gfs(env, "put", "-r", "2", str(src), "/f")          # the recorded CA is used
        out = tmp_path / "out"
        gfs(env, "get", "/f", str(out))
        assert out.read_bytes() == src.read_bytes()
        masters = cluster.master_addresses()
        with cluster.client() as c:
            c.put(io.BytesIO(b"x" * 1000), "/g", replication=2)
            assert c.read("/g") == b"x" * 1000
        # Without the CA: a plaintext client and the CLI both fail, in one line.
        with grpc.insecure_channel(masters[0]) as ch:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.MasterStub(ch).Status(pb.Empty(), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(GfsError):
            with Client(masters, deadline=3, token=cluster.admin_token) as c:
                c.stat("/f")
        bad = gfs(env, "--masters", ",".join(masters), "--timeout", "3", "ls", "/", check=False)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        # A chunkserver's port is TLS too.
        with grpc.insecure_channel(cluster.chunkserver_addresses()[0]) as ch:
            from proto import chunkserver_pb2 as cpb
            from proto import chunkserver_pb2_grpc as cpb_grpc
            with pytest.raises(grpc.RpcError):
                cpb_grpc.ChunkserverStub(ch).Status(cpb.StatusRequest(), timeout=3)
        assert all(r["health"] == "ok" for r in cluster.status())
    finally:
        LocalCluster(data).down()
