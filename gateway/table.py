"""The configuration the gateway serves, compiled: the route trie, each route's filter and
balancer, the global filter and the trusted proxies. Replaced whole (one assignment) when the
routes change, so a request sees one configuration from start to end."""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.routing.cidr import IpFilter, PrefixTrie
from gateway.routing.route import Route
from gateway.routing.trie import Match, RouteTable
from gateway.upstream.balance import Balancer


@dataclass
class CompiledRoute:
    route: Route
    filter: IpFilter
    balancer: Balancer
    hash_header: str | None


@dataclass
class ServingTable:
    table: RouteTable
    routes: dict[str, CompiledRoute]
    global_filter: IpFilter = field(default_factory=IpFilter)
    trusted: PrefixTrie = field(default_factory=PrefixTrie)
    revision: int = 0
    _matches: dict[tuple[str, str], Match | None] = field(default_factory=dict, init=False,
                                                         repr=False, compare=False)

    MATCH_CACHE_ENTRIES = 1024      # of host + path up to MATCH_CACHE_KEY characters: < 1 MiB
    MATCH_CACHE_KEY = 256

    @classmethod
    def build(cls, routes: list[Route], allow: list[str] = (), deny: list[str] = (),
              trusted_proxies: list[str] = (), revision: int = 0) -> "ServingTable":
        """Raises ValueError (one line) on a route that cannot be served or two that collide."""
        for route in routes:
            route.validate()
        compiled = {}
        for route in routes:
            header = route.lb[len("hash:header:"):].lower() \
                if route.lb.startswith("hash:header:") else None
            compiled[route.name] = CompiledRoute(route, IpFilter(route.allow, route.deny),
                                                 Balancer(route.lb), header)
        trusted = PrefixTrie()
        for net in trusted_proxies:
            trusted.insert(net, True)
        return cls(RouteTable(routes), compiled, IpFilter(allow, deny), trusted, revision)

    def match(self, host: str, path: str) -> Match | None:
        """`table.lookup`, remembered for the paths requests repeat: the trie walk costs a
        few µs of Python per request, a dict look-up a tenth of one. The table is never changed
        once built (a new configuration is a new ServingTable), so nothing goes stale; the
        memory is bounded (emptied when full, short hosts and paths only). Matches are shared: read
        them, never change them."""
        key = (host, path)
        try:
            return self._matches[key]
        except KeyError:
            pass
        found = self.table.lookup(host, path)
        if len(path) + len(host) <= self.MATCH_CACHE_KEY:
            if len(self._matches) >= self.MATCH_CACHE_ENTRIES:
                self._matches.clear()
            self._matches[key] = found
        return found

    def upstream_urls(self) -> set[str]:
        return {url for c in self.routes.values() for url in c.route.to}
