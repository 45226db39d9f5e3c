"""IPv4/IPv6 prefixes in a binary trie with longest-prefix match, and the allow/deny filter built
on it. Lookup walks at most 32 (IPv4) or 128 (IPv6) nodes whatever the number of prefixes."""
from __future__ import annotations

import functools
import ipaddress
from typing import Generic, Iterable, TypeVar

V = TypeVar("V")


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """'10.0.0.0/8', '2001:db8::/32', or a bare address (a /32 or /128). Host bits must be zero."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise ValueError(f"bad CIDR {text!r}: {err}") from None


@functools.lru_cache(maxsize=4096)          # the same clients come back: parse each once
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped                 # ::ffff:10.0.0.1 is 10.0.0.1 for filtering
    return addr


class PrefixTrie(Generic[V]):
    """Maps prefixes to values; `longest(ip)` is the value of the most specific prefix holding ip."""

    def __init__(self):
        self._roots = {4: [None, None, None, False], 6: [None, None, None, False]}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, network: str | ipaddress.IPv4Network | ipaddress.IPv6Network,
               value: V) -> None:
        net = parse_network(network) if isinstance(network, str) else network
        node = self._roots[net.version]
        bits = int(net.network_address)
        width = net.max_prefixlen
        for i in range(net.prefixlen):
            bit = (bits >> (width - 1 - i)) & 1
            if node[bit] is None:
                node[bit] = [None, None, None, False]
            node = node[bit]
        if not node[3]:
            self._size += 1
        node[2], node[3] = value, True

    def get(self, network: str) -> V | None:
        """The value stored for exactly this prefix."""
        net = parse_network(network)
        node = self._roots[net.version]
        bits, width = int(net.network_address), net.max_prefixlen
        for i in range(net.prefixlen):
            node = node[(bits >> (width - 1 - i)) & 1]
            if node is None:
                return None
        return node[2] if node[3] else None

    def longest(self, ip: str) -> V | None:
        """The value of the longest prefix containing `ip` (None if none does, or ip is bad)."""
        if not self._size:
            return None
        try:
            addr = _address(ip)
        except ValueError:
            return None
        node = self._roots[addr.version]
        bits, width = int(addr), addr.max_prefixlen
        best = node[2] if node[3] else None
        for i in range(width - 1, -1, -1):
            node = node[(bits >> i) & 1]
            if node is None:
                break
            if node[3]:
                best = node[2]
        return best


class IpFilter:
    """Allow and deny lists; the longest matching prefix decides. An address no prefix holds is
    allowed when the allow list is empty and refused otherwise. A prefix on both lists is an
    error (it would make the order of the lists matter)."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()):
        self.allow = [str(parse_network(a)) for a in allow]
        self.deny = [str(parse_network(d)) for d in deny]
        both = set(self.allow) & set(self.deny)
        if both:
            raise ValueError(f"CIDR on both the allow and the deny list: {', '.join(sorted(both))}")
        self._trie: PrefixTrie[bool] = PrefixTrie()
        for net in self.allow:
            self._trie.insert(net, True)
        for net in self.deny:
            self._trie.insert(net, False)
        self.empty = not self.allow and not self.deny

    def allows(self, ip: str) -> bool:
        if self.empty:                           # no lists: everyone (checked per request)
            return True
        verdict = self._trie.longest(ip)
        if verdict is None:
            return not self.allow
        return verdict


def client_address(peer_ip: str, forwarded_for: str | None, trusted: PrefixTrie[bool]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy, in which case
    X-Forwarded-For is read from the right, skipping trusted proxies, and the first address not
    trusted is the client. Nobody is trusted unless configured."""
    if not len(trusted) or forwarded_for is None or not trusted.longest(peer_ip):
        return peer_ip
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    client = peer_ip
    for hop in reversed(hops):
        try:
            _address(hop)
        except ValueError:
            break                               # garbage: stop at the last address we trust
        client = hop
        if not trusted.longest(hop):
            break
    return client
