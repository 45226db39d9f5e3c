"""Routes kept by the masters: `gfs route` changes them, a real gateway follows them within a
second without dropping connections, serves its saved routes while the masters are down,
checks per-route tokens against the pushed permission store, and proxies the masters' own
gRPC API."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time

import grpc
import pytest

from gfs.auth.tokens import bearer
from proto import identity_pb2_grpc as ipb_grpc
from proto import master_pb2 as pb
from tests.integration.gateway_procs import GatewayProc, spawn_upstream, stop
from tests.integration.polling import wait_for


def gfs(cluster, *args, token=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=cluster.cli_env(token), timeout=60)


def get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.fixture(scope="module")
def upstream():
    proc, port = spawn_upstream("up")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_routes_from_the_masters(make_cluster, tmp_path, upstream):
    cluster = make_cluster(masters=1)
    token = cluster.admin_token
    work = tmp_path / "gw"
    add = gfs(cluster, "route", "add", "echo", "--path", "/echo/*", "--to", upstream,
              "--strip-prefix", "--timeout", "5s", "--health-path", "/health",
              "--health-interval", "0.5s", "--health-fall", "4", "--json")
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["revision"] == 1
    with GatewayProc(work, None, masters=cluster.master_addresses(), token=token) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        wait_for(lambda: get(conn, "/echo/x")[0] == 200, 10, "the first routes", 0.1)
        # a change applies within a second, on the connection already open
        assert gfs(cluster, "route", "add", "other", "--path", "/other", "--to",
                   upstream).returncode == 0
        start = time.monotonic()
        wait_for(lambda: get(conn, "/other")[0] == 200, 5, "the new route", 0.02)
        assert time.monotonic() - start < 1.0
        assert gfs(cluster, "route", "rm", "other").returncode == 0
        start = time.monotonic()
        wait_for(lambda: get(conn, "/other")[0] == 404, 5, "the route removed", 0.02)
        assert time.monotonic() - start < 1.0
        # the CLI: listing, showing, bad input and non-administrators get one line
        ls = gfs(cluster, "route", "ls")
        assert ls.returncode == 0 and "echo" in ls.stdout and "(1 routes, revision 3)" in ls.stdout
        show = json.loads(gfs(cluster, "route", "show", "echo", "--json").stdout)
        assert show["strip_prefix"] and show["timeout_s"] == 5.0
        assert show["health_path"] == "/health"
        assert (show["health_interval_s"], show["health_fall"], show["health_rise"]) == (0.5, 4, 0)
        bad = gfs(cluster, "route", "add", "bad", "--to", "ftp://x:1")
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        twin = gfs(cluster, "route", "add", "twin", "--path", "/echo/*", "--to", upstream)
        assert twin.returncode != 0 and "match the same" in twin.stderr
        with cluster.client() as admin:
            admin.user_add("alice")
            alice, _ = admin.token_create("t", principal="alice")
        refused = gfs(cluster, "route", "add", "mine", "--to", upstream, token=alice)
        assert refused.returncode != 0 and "not an administrator" in refused.stderr
        assert gw.status()["revision"] == 3 and gw.status()["staleness_s"] < 1.5
        status = gfs(cluster, "gateway", "status", "--metrics", f"127.0.0.1:{gw.metrics_port}")
        assert status.returncode == 0 and "1 routes, revision 3, confirmed" in status.stdout


def test_saved_routes_tokens_and_the_masters_grpc_behind_the_gateway(make_cluster, tmp_path,
                                                                      upstream):
    cluster = make_cluster(masters=1)
    master = cluster.master_addresses()[0]
    with cluster.client() as admin:
        admin.user_add("alice")
        alice, _ = admin.token_create("t", principal="alice")
        narrow, _ = admin.token_create("narrow", principal="alice",
                                       scopes=["storage.alice.files:list"])
        admin.route_put({"name": "private", "path": "/private/*", "to": [upstream],
                         "require_token": "storage.alice.files:read"})
        admin.route_put({"name": "identity", "path": "/gfs.identity.Identity/*",
                         "to": [f"h2c://{master}"]})
    work = tmp_path / "gw"
    with GatewayProc(work, None, masters=[master], token=cluster.admin_token) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        wait_for(lambda: get(conn, "/private/echo")[0] == 401, 10, "the routes", 0.1)
        wait_for(lambda: get(conn, "/private/echo", {"Authorization": f"Bearer {alice}"})[0]
                 == 200, 10, "the permission feed", 0.1)
        status, body = get(conn, "/private/echo", {"Authorization": f"Bearer {alice}",
                                                    "X-Gfs-User": "admin"})
        assert dict(json.loads(body)["headers"])["x-gfs-user"] == "alice"   # overwritten
        assert get(conn, "/private/echo", {"Authorization": f"Bearer {narrow}"})[0] == 403
        assert get(conn, "/private/echo", {"Authorization": "Bearer gfs_nonsense"})[0] == 401
        # the master's own gRPC API, through the gateway
        with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            me = ipb_grpc.IdentityStub(channel).WhoAmI(pb.Empty(), timeout=10,
                                                       metadata=bearer(alice))
            assert me.user == "alice"
        # the masters go away: the gateway keeps serving, and says how stale it is
        cluster.down()
        time.sleep(1.2)
        assert get(conn, "/private/echo")[0] == 401
        assert gw.status()["staleness_s"] >= 1.0
        # tokens cannot be checked with the permission feed silent for more than 2 s: refused,
        # not trusted
        wait_for(lambda: get(conn, "/private/echo", {"Authorization": f"Bearer {alice}"})[0]
                 == 503, 5, "tokens refused", 0.1)
    # restarted with the masters down: it starts from the saved routes
    with GatewayProc(work, None, masters=[master], token=cluster.admin_token) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        assert get(conn, "/private/echo")[0] == 401
        assert gw.status()["routes"] == 2
        assert 'gfs_gateway_config_staleness_seconds' in gw.metrics()
