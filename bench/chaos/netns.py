"""Test hosts on one machine: network namespaces joined by a bridge, with links that can be cut.

Every namespace, veth pair and the bridge belong to this run (names carry a run tag) and are
removed by `teardown()`. Addresses come from 10.77.N.0/24 *inside* those namespaces only.
"""
from __future__ import annotations

import os
import shutil
import subprocess


class NetLabUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, or no `ip`)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class NetLab:
    def __init__(self, hosts: int, tag: str | None = None):
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NetLabUnavailable("network namespaces need root and iproute2's `ip`")
        self.tag = tag or f"{os.getpid() % 10000:04d}"
        self.subnet = 20 + os.getpid() % 200
        self.bridge = f"gbr{self.tag}"
        self.gateway = f"10.77.{self.subnet}.1"
        self.namespaces = [f"gfs{self.tag}h{i}" for i in range(1, hosts + 1)]
        self.addresses = [f"10.77.{self.subnet}.{10 + i}" for i in range(1, hosts + 1)]
        self._cuts: set[tuple[int, int]] = set()
        try:
            self._build()
        except subprocess.CalledProcessError as err:
            self.teardown()
            raise NetLabUnavailable(f"cannot build test network: {err.stderr.strip()}") from None

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, addr) in enumerate(zip(self.namespaces, self.addresses), start=1):
            outside, inside = f"gv{self.tag}h{i}", f"gi{self.tag}h{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "route", "add", "default", "via", self.gateway)

    def exec_prefix(self, host: int) -> list[str]:
        """argv prefix that runs a command inside host `host` (0-based)."""
        return ["ip", "netns", "exec", self.namespaces[host]]

    def cut(self, a: int, b: int) -> None:
        """Drop all traffic between hosts a and b (both directions)."""
        for x, y in ((a, b), (b, a)):
            if (x, y) not in self._cuts:
                _ip("-n", self.namespaces[x], "route", "add", "blackhole",
                    f"{self.addresses[y]}/32")
                self._cuts.add((x, y))

    def isolate(self, host: int, others: list[int]) -> None:
        for o in others:
            if o != host:
                self.cut(host, o)

    def heal(self) -> None:
        for x, y in sorted(self._cuts):
            _ip("-n", self.namespaces[x], "route", "del", "blackhole", f"{self.addresses[y]}/32",
                check=False)
        self._cuts.clear()

    def teardown(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)
