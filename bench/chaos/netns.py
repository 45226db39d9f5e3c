"""Test hosts on one machine: network namespaces joined by a bridge, with links that can be cut,
made lossy, cut one way, or slowed.

Every namespace, veth pair and the bridge belong to this run (names carry a run tag) and are
removed by `teardown()`. Addresses come from 10.77.N.0/24 *inside* those namespaces only.

Faults (each undone by `heal()`):
* `cut` / `isolate`: blackhole routes between hosts (both directions);
* `lose`: nftables drops a random fraction of the packets on a link (`numgen random`; this
  kernel has no `netem`), both directions;
* `one_way`: a host is not heard (its packets to the others are dropped) or does not hear;
* `delay`: the TCP connections between two hosts on a port go through a `DelayProxy` on the
  bridge (nftables DNAT on the connecting side; established connections are reset with
  `ss -K` so that they reconnect through it).
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess

from bench.chaos.delayproxy import DelayProxy

NFT_TABLE = "gfschaos"
NFT_SETUP = f"""table inet {NFT_TABLE} {{
  chain out {{ type filter hook output priority 0; }}
  chain in {{ type filter hook input priority 0; }}
  chain natout {{ type nat hook output priority -100; }}
}}
"""


class NetLabUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, or no `ip`)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class NetLab:
    _made = itertools.count()      # labs made by this process

    def __init__(self, hosts: int, tag: str | None = None):
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NetLabUnavailable("network namespaces need root and iproute2's `ip`")
        # Names and subnet differ from the previous lab of this process too: the kernel
        # destroys a deleted namespace (and the veth pair in it) later, so its names may still
        # be taken ("RTNETLINK answers: File exists") when the next lab is built.
        made = next(self._made)
        self.tag = tag or f"{os.getpid() % 10000:04d}{made % 100:02d}"
        self.subnet = 20 + (os.getpid() + made) % 200
        self.bridge = f"gbr{self.tag}"
        self.gateway = f"10.77.{self.subnet}.1"
        self.namespaces = [f"gfs{self.tag}h{i}" for i in range(1, hosts + 1)]
        self.addresses = [f"10.77.{self.subnet}.{10 + i}" for i in range(1, hosts + 1)]
        self._cuts: set[tuple[int, int]] = set()
        self._filtered: set[int] = set()          # hosts with nftables rules in place
        self._proxies: list[DelayProxy] = []
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
            self._nft(i - 1, NFT_SETUP)

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

    def _nft(self, host: int, script: str) -> None:
        subprocess.run([*self.exec_prefix(host), "nft", "-f", "-"], input=script, text=True,
                       capture_output=True, check=True)

    def _rule(self, host: int, chain: str, rule: str) -> None:
        self._nft(host, f"add rule inet {NFT_TABLE} {chain} {rule}\n")
        self._filtered.add(host)

    def lose(self, a: int, b: int, fraction: float) -> None:
        """Drop `fraction` (0..1) of the packets between hosts a and b, each way."""
        per_mille = max(1, min(1000, round(fraction * 1000)))
        for x, y in ((a, b), (b, a)):
            self._rule(x, "out", f"ip daddr {self.addresses[y]} numgen random mod 1000 < "
                                 f"{per_mille} drop")

    def one_way(self, host: int, others: list[int], heard: bool) -> None:
        """Cut one direction between `host` and `others`: with heard=False its packets to them
        are dropped (it hears them, they do not hear it); with heard=True their packets to it
        are dropped (it is heard but hears nothing)."""
        for o in others:
            if o != host:
                chain, addr = ("in", "saddr") if heard else ("out", "daddr")
                self._rule(host, chain, f"ip {addr} {self.addresses[o]} drop")

    def delay(self, a: int, b: int, port: int, delay_s: float) -> None:
        """Route the TCP connections between hosts a and b to `port` (whichever side connects)
        through a relay on the bridge that delays every byte by `delay_s`, each way."""
        for x, y in ((a, b), (b, a)):
            proxy = DelayProxy(self.gateway, f"{self.addresses[y]}:{port}", delay_s)
            self._proxies.append(proxy)
            self._rule(x, "natout", f"ip daddr {self.addresses[y]} tcp dport {port} "
                                    f"dnat ip to {self.gateway}:{proxy.port}")
        self._reset_connections(a, b)

    def _reset_connections(self, a: int, b: int) -> None:
        """Reset the TCP connections between hosts a and b (they reconnect, through whatever
        the NAT rules now say)."""
        for x, y in ((a, b), (b, a)):
            subprocess.run([*self.exec_prefix(x), "ss", "-K", "dst", self.addresses[y]],
                           capture_output=True, check=False)

    def heal(self) -> None:
        for x, y in sorted(self._cuts):
            _ip("-n", self.namespaces[x], "route", "del", "blackhole", f"{self.addresses[y]}/32",
                check=False)
        self._cuts.clear()
        for host in sorted(self._filtered):
            for chain in ("out", "in", "natout"):
                subprocess.run([*self.exec_prefix(host), "nft", "flush", "chain", "inet",
                                NFT_TABLE, chain], capture_output=True, check=False)
        if self._proxies:
            for proxy in self._proxies:
                proxy.close()             # the relayed connections drop and reconnect directly
            self._proxies.clear()
        self._filtered.clear()

    def teardown(self) -> None:
        for proxy in self._proxies:
            proxy.close()
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)
