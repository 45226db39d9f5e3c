"""Route lookup time with 10, 1,000 and 100,000 routes: the gateway's trie beside a linear scan
over the same routes (what a list of regexes or prefixes costs). Not a timed test.

    python -m bench.gateway_routes [--lookups 20000] [--json]
"""
from __future__ import annotations

import json
import random
import re
import sys
import time

from gateway.routing.route import Route
from gateway.routing.trie import RouteTable

SIZES = (10, 1_000, 100_000)


def make_routes(n: int) -> list[Route]:
    """A realistic mix: per-service static prefixes, parameters, and host-bound routes."""
    routes = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            path, host = f"/svc{i}/v1/users/{{id}}", ""
        elif kind == 1:
            path, host = f"/svc{i}/static/*", ""
        elif kind == 2:
            path, host = f"/svc{i}/items/{{item}}/parts/{{part}}", ""
        else:
            path, host = "/api/*", f"h{i}.example.com"
        routes.append(Route(name=f"r{i}", path=path, host=host, to=["http://127.0.0.1:1"]))
    return routes


def request_for(route: Route) -> tuple[str, str]:
    host = route.host or "any.example.org"
    path = route.path.replace("{id}", "42").replace("{item}", "7").replace("{part}", "3")
    return host, path.replace("*", "css/site.css")


class LinearTable:
    """Every route as a compiled regex, tried in order: the contrast."""

    def __init__(self, routes: list[Route]):
        self.entries = []
        for route in routes:
            pattern = re.escape(route.path).replace(r"\*", ".*")
            pattern = re.sub(r"\\\{[A-Za-z_]+\\\}", "[^/]+", pattern)
            self.entries.append((route.host, re.compile(pattern + "$"), route))

    def lookup(self, host: str, path: str):
        for h, rx, route in self.entries:
            if (not h or h == host) and rx.match(path):
                return route
        return None


def timed(fn, requests, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for host, path in requests:
            fn(host, path)
    return (time.perf_counter() - start) / (repeat * len(requests))


def run(lookups: int) -> list[dict]:
    rows = []
    rng = random.Random(17)
    for n in SIZES:
        routes = make_routes(n)
        table = RouteTable(routes)
        linear = LinearTable(routes)
        requests = [request_for(rng.choice(routes)) for _ in range(1000)]
        for host, path in requests[:50]:
            assert table.lookup(host, path) is not None
        trie_s = timed(table.lookup, requests, max(1, lookups // len(requests)))
        # the linear scan over 100,000 routes is slow: fewer lookups, same per-lookup figure
        lin_requests = requests[:max(10, min(1000, 2_000_000 // (n * 10)))]
        linear_s = timed(linear.lookup, lin_requests, 1)
        rows.append({"routes": n, "trie_us": round(trie_s * 1e6, 2),
                     "linear_us": round(linear_s * 1e6, 2)})
    return rows


def main(argv: list[str]) -> None:
    lookups = int(argv[argv.index("--lookups") + 1]) if "--lookups" in argv else 20000
    rows = run(lookups)
    if "--json" in argv:
        print(json.dumps(rows))
        return
    print(f"{'routes':>8} {'trie µs/lookup':>16} {'linear µs/lookup':>18}")
    for row in rows:
        print(f"{row['routes']:>8} {row['trie_us']:>16} {row['linear_us']:>18}")


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main(sys.argv[1:])
