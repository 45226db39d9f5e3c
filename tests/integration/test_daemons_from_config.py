"""A real master and a real chunkserver started from config files that `gfs admin init-node`
wrote, with nothing else on their command lines; then a put and a get through them."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cli.localcluster import free_port
from gfs.auth.secret import create_secret_file
from gfs.auth.tokens import new_token
from gfs.client import Client
from gfs.config import write_private
from gfs.errors import GfsError


def gfs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def daemons():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_master_and_chunkserver_run_from_config_files(tmp_path, daemons):
    raft, grpc_, metrics, bind = (f"127.0.0.1:{free_port()}" for _ in range(4))
    mconf, cconf = tmp_path / "etc" / "master.toml", tmp_path / "etc" / "chunkserver.toml"
    secret, admin = tmp_path / "etc" / "cluster.secret", tmp_path / "etc" / "admin.token"
    write_private(admin, new_token())            # (creates etc/)
    create_secret_file(secret)
    r = gfs("admin", "init-node", "master", "-o", str(mconf), "--id", "1", "--raft", raft,
            "--grpc", grpc_, "--peers", f"{raft}@{grpc_}", "--metrics", metrics,
            "--data", str(tmp_path / "master"), "--replication", "1",
            "--cluster-secret-file", str(secret), "--admin-token-file", str(admin))
    assert r.returncode == 0, r.stderr
    r = gfs("admin", "init-node", "chunkserver", "-o", str(cconf), "--masters", grpc_,
            "--bind", bind, "--data", str(tmp_path / "cs"), "--heartbeat-interval", "0.2",
            "--cluster-secret-file", str(secret))
    assert r.returncode == 0, r.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith("GFS_")}
    # Each daemon tells its supervisor when it serves, as systemd's Type=notify expects.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    for conf, name in ((mconf, "master"), (cconf, "chunkserver")):
        log = open(tmp_path / f"{name}.log", "wb")
        daemons.append(subprocess.Popen([sys.executable, "-m", "cli.main", name],
                                        env={**env, "GFS_CONFIG": str(conf),
                                             "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
                                        stdout=log, stderr=log, start_new_session=True))
        log.close()
        msg = dict(line.split("=", 1) for line in notify.recv(4096).decode().splitlines())
        assert msg["READY"] == "1" and msg["MAINPID"] == str(daemons[-1].pid), msg
    notify.close()

    data = os.urandom(300_000)
    deadline = time.monotonic() + 30
    with Client([grpc_], deadline=5, token=admin.read_text().strip()) as c:
        while True:
            try:
                c.put(io.BytesIO(data), "/from-config")
                break
            except GfsError:
                # The chunkserver may not have registered yet.
                assert all(p.poll() is None for p in daemons), \
                    (tmp_path / "master.log").read_text() + (tmp_path / "chunkserver.log").read_text()
                assert time.monotonic() < deadline, "no put within 30 s"
                time.sleep(0.2)
        out = io.BytesIO()
        c.get("/from-config", out)
        assert out.getvalue() == data
        assert c.stat("/from-config").replication == 1          # from the master's file
    # The daemons used the files' directories and addresses.
    assert (tmp_path / "master").is_dir() and (tmp_path / "cs").is_dir()
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as resp:
        assert "gfs_rpc_requests_total" in resp.read().decode()
