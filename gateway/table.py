"""The configuration the gateway serves, compiled: the route trie, each route's filter and
balancer, the global filter and the trusted proxies. Replaced whole (one assignment) when the
routes change, so a request sees one configuration from start to end."""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.routing.cidr import IpFilter, PrefixTrie
from gateway.routing.route import Route
from gateway.routing.trie import RouteTable
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

    def upstream_urls(self) -> set[str]:
        return {url for c in self.routes.values() for url in c.route.to}
