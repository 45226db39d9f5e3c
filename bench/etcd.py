"""A real 3-member etcd on loopback, the peer that gfs's masters are compared with.

It runs Debian's `etcd-server` binary (`./run.sh bench` installs it when it can) as three
processes with their own temporary data directories and ports, etcd's default heartbeat
(100 ms) and election timeout (1000 ms); every process is stopped by its PID. Where etcd is
missing or does not start, `EtcdCluster.start` raises `EtcdMissing` with the reason, and the
benchmarks skip the etcd columns with that message.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from cli.localcluster import free_port


class EtcdMissing(Exception):
    """etcd cannot be run here; the message says why."""


def etcd_binary() -> str | None:
    return shutil.which("etcd") or next((p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd")
                                         if os.access(p, os.X_OK)), None)


def etcd_version() -> str:
    binary = etcd_binary()
    if not binary:
        return ""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=False).stdout
    return out.split("\n")[0].split(":")[-1].strip()


class EtcdCluster:
    """Three etcd members on 127.0.0.1 under `base` (member-N/ holds data and log)."""

    def __init__(self, base: str | os.PathLike, members: int = 3):
        self.base = Path(base)
        self.names = [f"etcd-{i}" for i in range(1, members + 1)]
        self.client = {n: free_port() for n in self.names}
        self.peer = {n: free_port() for n in self.names}
        self.token = f"gfs-bench-{secrets.token_hex(4)}"
        self._procs: dict[str, subprocess.Popen] = {}

    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.client[n]}" for n in self.names]

    def argv(self, name: str, binary: str) -> list[str]:
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        client, peer = f"http://127.0.0.1:{self.client[name]}", f"http://127.0.0.1:{self.peer[name]}"
        return [binary, "--name", name, "--data-dir", str(self.base / name / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token, "--logger", "zap",
                "--log-level", "warn", "--log-outputs", str(self.base / name / "etcd.log")]

    def start(self, timeout: float = 30.0) -> None:
        """Start every member that is not running and wait until all are healthy."""
        binary = etcd_binary()
        if not binary:
            raise EtcdMissing("etcd is not installed (Debian package etcd-server; "
                              "`./run.sh bench` installs it when run as root)")
        for name in self.names:
            if self.pid(name):
                continue
            (self.base / name).mkdir(parents=True, exist_ok=True)
            with open(self.base / name / "stdout.log", "ab") as out:
                self._procs[name] = subprocess.Popen(
                    self.argv(name, binary), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead:
                self.stop()
                raise EtcdMissing(f"{dead[0]} exited at start; see {self.base / dead[0]}/etcd.log")
            if all(self.healthy(n) for n in self.names) and self.leader():
                return
            time.sleep(0.1)
        self.stop()
        raise EtcdMissing(f"etcd members not healthy after {timeout:.0f}s; logs in {self.base}")

    def pid(self, name: str) -> int | None:
        p = self._procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    def _get(self, name: str, path: str) -> str:
        url = f"http://127.0.0.1:{self.client[name]}{path}"
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.read().decode()

    def healthy(self, name: str) -> bool:
        try:
            return '"health":"true"' in self._get(name, "/health").replace(" ", "")
        except OSError:
            return False

    def leader(self) -> str | None:
        """The member whose metrics say it leads (etcd_server_is_leader 1)."""
        for name in self.names:
            if not self.pid(name):
                continue
            try:
                if "\netcd_server_is_leader 1" in self._get(name, "/metrics"):
                    return name
            except OSError:
                continue
        return None

    def kill(self, name: str) -> None:
        """kill -9 one member (by its PID) and reap it."""
        p = self._procs.pop(name, None)
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM every member by PID, SIGKILL what is left after 10 s."""
        for p in self._procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for name in list(self._procs):
            try:
                self._procs[name].wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(name)
        self._procs.clear()
