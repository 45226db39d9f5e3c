"""The container image for real: build it with deploy/container/build-image.sh (Debian base from
debootstrap, no registry), run three masters and three chunkservers in containers on a podman
network, put and get through them, and lose a master and a chunkserver; and run the systemd
units of deploy/systemd/ under systemd (PID 1 of a container), with their hardening in effect.

Heavy (the first build takes minutes; later ones reuse the cached base and wheels), so it runs
only with GFS_CONTAINER_TESTS=1:

    GFS_CONTAINER_TESTS=1 ./run.sh test tests/integration/test_container.py

It is skipped, saying why, when podman or debootstrap is missing or podman cannot run a
container on this machine.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gfs.auth.tokens import new_token
from gfs.client import Client
from gfs.errors import GfsError

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "container" / "build-image.sh"
TAG = "localhost/gfs:test"
GFS_UID = 7000            # the image's gfs user

pytestmark = pytest.mark.skipif(os.environ.get("GFS_CONTAINER_TESTS") != "1",
                                reason="container tests build an image (minutes): set "
                                       "GFS_CONTAINER_TESTS=1 to run them")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {r.stderr.strip()}")
    return r


def runtime_args() -> list[str]:
    """The `podman run` options this machine needs (the build script finds them by trying);
    skips the test, with podman's errors, when podman cannot run a container here."""
    r = subprocess.run(["bash", str(BUILD), "--run-args"], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode == 3:
        pytest.skip(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout.split()


@pytest.fixture(scope="module")
def image() -> str:
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install podman debootstrap runc)")
    runtime_args()          # skips with the reason if podman cannot run containers here
    r = subprocess.run(["bash", str(BUILD), TAG], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    return TAG


class Pod:
    """Containers and a network of this test, removed at the end."""

    def __init__(self, image: str, extra: list[str], name: str):
        self.image, self.extra, self.name = image, extra, name
        self.containers: list[str] = []
        third = 100 + os.getpid() % 150
        self.subnet = f"10.89.{third}"
        podman("network", "create", "--subnet", f"{self.subnet}.0/24", name)

    def run(self, cname: str, ip: str, args: list[str], conf: Path) -> None:
        podman("run", "-d", "--name", f"{self.name}-{cname}", "--network", self.name,
               "--ip", ip, *self.extra, "-v", f"{conf}:/etc/gfs:Z", self.image, *args)
        self.containers.append(f"{self.name}-{cname}")

    def gfs(self, conf: Path, *args: str) -> None:
        """Run the CLI in a throwaway container (as the image's gfs user)."""
        podman("run", "--rm", "--network", self.name, *self.extra, "-v",
               f"{conf}:/etc/gfs:Z", self.image, *args)

    def logs(self) -> str:
        return "\n".join(f"--- {c}\n" + podman("logs", "--tail", "20", c, check=False).stderr
                         for c in self.containers)

    def close(self) -> None:
        for c in self.containers:
            podman("rm", "-f", "-v", c, check=False)
        podman("network", "rm", "-f", self.name, check=False)


def test_three_masters_three_chunkservers_in_containers(image, tmp_path):
    extra = runtime_args()
    pod = Pod(image, extra, f"gfs-test-{os.getpid()}")
    try:
        ips = {f"m{i}": f"{pod.subnet}.{10 + i}" for i in (1, 2, 3)} | \
              {f"c{i}": f"{pod.subnet}.{20 + i}" for i in (1, 2, 3)}
        peers = ",".join(f"{ips[f'm{i}']}:7000@{ips[f'm{i}']}:7100" for i in (1, 2, 3))
        masters = [f"{ips[f'm{i}']}:7100" for i in (1, 2, 3)]
        secret, admin = os.urandom(32), new_token()
        for name, ip in ips.items():
            conf = tmp_path / name
            conf.mkdir()
            (conf / "cluster.secret").write_bytes(secret)
            (conf / "admin.token").write_text(admin)
            for path in (conf, conf / "cluster.secret", conf / "admin.token"):
                os.chown(path, GFS_UID, GFS_UID)
            for path in (conf / "cluster.secret", conf / "admin.token"):
                os.chmod(path, 0o600)
            # Each node's config file, written by init-node inside the image.
            if name.startswith("m"):
                pod.gfs(conf, "admin", "init-node", "master", "-o", "/etc/gfs/master.toml",
                        "--id", name[1], "--raft", f"{ip}:7000", "--grpc", f"{ip}:7100",
                        "--peers", peers, "--metrics", f"{ip}:7300",
                        "--data", "/var/lib/gfs/master", "--election-timeout", "0.5",
                        "--cluster-secret-file", "/etc/gfs/cluster.secret",
                        "--admin-token-file", "/etc/gfs/admin.token")
                pod.run(name, ip, ["master", "--config", "/etc/gfs/master.toml"], conf)
            else:
                pod.gfs(conf, "admin", "init-node", "chunkserver", "-o",
                        "/etc/gfs/chunkserver.toml", "--masters", ",".join(masters),
                        "--bind", "0.0.0.0:7200", "--advertise-host", ip,
                        "--metrics", f"{ip}:7300", "--heartbeat-interval", "0.5",
                        "--cluster-secret-file", "/etc/gfs/cluster.secret")
                pod.run(name, ip, ["chunkserver", "--config", "/etc/gfs/chunkserver.toml"], conf)
            assert oct((conf / f"{'master' if name[0] == 'm' else 'chunkserver'}.toml")
                       .stat().st_mode & 0o777) == "0o600"

        data = os.urandom(5 << 20)
        with Client(masters, deadline=10, token=admin) as c:
            deadline = time.monotonic() + 90
            while True:        # until a leader exists and three chunkservers have registered
                try:
                    c.put(io.BytesIO(data), "/in-containers", replication=3, chunk_size=1 << 20)
                    break
                except GfsError as err:
                    assert time.monotonic() < deadline, f"no put within 90 s: {err}\n{pod.logs()}"
                    time.sleep(1)
            out = io.BytesIO()
            c.get("/in-containers", out)
            assert out.getvalue() == data
            info = c.stat("/in-containers")
            replicas = {r for ch in info.chunks for r in ch.replicas}
            assert replicas == {f"{ips[f'c{i}']}:7200" for i in (1, 2, 3)}

        # Lose a master and a chunkserver: the data stays readable and writable.
        podman("kill", f"{pod.name}-m1")
        podman("kill", f"{pod.name}-c1")
        with Client(masters, deadline=30, token=admin) as c:
            out = io.BytesIO()
            c.get("/in-containers", out)
            assert out.getvalue() == data
            c.put(io.BytesIO(data[:100_000]), "/after-loss", replication=2)
            out = io.BytesIO()
            c.get("/after-loss", out)
            assert out.getvalue() == data[:100_000]
    finally:
        pod.close()


SYSTEMD_CONTAINERFILE = """\
ARG IMAGE
FROM ${IMAGE}
USER root
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        systemd systemd-sysv >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
COPY gfs-master.service gfs-chunkserver.service /etc/systemd/system/
ENTRYPOINT ["/sbin/init"]
"""


def test_systemd_units_under_real_systemd(image, tmp_path):
    """deploy/systemd/ under systemd as PID 1 (of a privileged container, so that systemd can set
    up the units' namespaces): Type=notify readiness, the hardening in effect, put/get, restart
    after kill -9, clean stop."""
    extra = runtime_args()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(SYSTEMD_CONTAINERFILE)
    for unit in ("gfs-master.service", "gfs-chunkserver.service"):
        shutil.copy(ROOT / "deploy" / "systemd" / unit, ctx)
    podman("build", "-q", *extra, "--build-arg", f"IMAGE={image}", "-t",
           "localhost/gfs-systemd:test", str(ctx), timeout=900)
    name = f"gfs-test-systemd-{os.getpid()}"
    podman("run", "-d", "--name", name, "--privileged", "--systemd=always", *extra,
           "localhost/gfs-systemd:test")

    def sh(script: str, check: bool = True) -> str:
        r = podman("exec", name, "sh", "-ec", script, check=False, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{script}\n{r.stdout}{r.stderr}\n" + podman(
                "exec", name, "journalctl", "--no-pager", "-n", "40", check=False).stdout)
        return r.stdout

    try:
        deadline = time.monotonic() + 60
        while sh("systemctl is-system-running || true").strip() not in ("running", "degraded"):
            assert time.monotonic() < deadline, "systemd did not finish booting"
            time.sleep(0.5)
        sh("head -c 32 /dev/urandom > /etc/gfs/cluster.secret && gfs token new > /etc/gfs/admin.token"
           " && chown gfs /etc/gfs/cluster.secret /etc/gfs/admin.token"
           " && chmod 600 /etc/gfs/cluster.secret /etc/gfs/admin.token")
        sh("gfs admin init-node master --owner gfs --id 1 --raft 127.0.0.1:7000 "
           "--grpc 127.0.0.1:7100 --peers 127.0.0.1:7000@127.0.0.1:7100 "
           "--metrics 127.0.0.1:7300 --replication 1 "
           "--cluster-secret-file /etc/gfs/cluster.secret --admin-token-file /etc/gfs/admin.token")
        sh("gfs admin init-node chunkserver --owner gfs --masters 127.0.0.1:7100 "
           "--bind 127.0.0.1:7200 --metrics 127.0.0.1:7301 "
           "--cluster-secret-file /etc/gfs/cluster.secret")
        # Type=notify: start returns once each daemon said READY=1.
        sh("systemctl start gfs-master gfs-chunkserver")
        for role, status in (("master", "master 1 serving gRPC on 127.0.0.1:7100"),
                             ("chunkserver", "chunkserver 127.0.0.1:7200 serving")):
            shown = sh(f"systemctl show -p ActiveState,StatusText gfs-{role}")
            assert "ActiveState=active" in shown and f"StatusText={status}" in shown, shown
        pid = sh("systemctl show -p MainPID --value gfs-master").strip()
        proc = sh(f"cat /proc/{pid}/status")
        assert "NoNewPrivs:\t1" in proc and "CapEff:\t0000000000000000" in proc
        assert "Seccomp:\t2" in proc and f"Uid:\t{GFS_UID}\t" in proc
        mounts = {f.split()[4]: f.split()[5] for f in sh(f"cat /proc/{pid}/mountinfo").splitlines()}
        assert mounts["/"].startswith("ro,") and mounts["/var/lib/gfs"].startswith("rw,")
        assert "/tmp" in mounts and mounts["/home"].startswith("ro,")

        sh("gfs --masters 127.0.0.1:7100 login < /etc/gfs/admin.token && head -c 3000000 /dev/urandom > /root/f"
           " && gfs --masters 127.0.0.1:7100 put /root/f /f"
           " && gfs --masters 127.0.0.1:7100 get /f /root/g && cmp /root/f /root/g")
        cs_pid = sh("systemctl show -p MainPID --value gfs-chunkserver").strip()
        sh(f"kill -9 {cs_pid}")
        deadline = time.monotonic() + 60
        while True:        # Restart=on-failure after RestartSec=2s
            shown = sh("systemctl show -p MainPID,ActiveState,NRestarts gfs-chunkserver")
            if "ActiveState=active" in shown and f"MainPID={cs_pid}\n" not in shown:
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.5)
        assert "NRestarts=1" in shown
        sh("gfs --masters 127.0.0.1:7100 get /f /root/h && cmp /root/f /root/h")
        sh("systemctl stop gfs-chunkserver gfs-master")
        assert "Result=success" in sh("systemctl show -p Result gfs-master")
    finally:
        podman("rm", "-f", name, check=False)
