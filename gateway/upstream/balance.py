"""Which of a route's upstreams takes a request: round-robin, least in-flight requests, or a
hash of the client address or of a header (rendezvous hashing: when an upstream leaves, only
its own keys move). Ejected upstreams are skipped while any other is available. Works on anything with `url`,
`healthy`, `ejected_until`, `in_flight` and `available(now)` (the gateway's upstreams, the L4
balancer's backends)."""
from __future__ import annotations

import hashlib
import itertools
import time

from gateway.upstream.pool import Backend


class Balancer:
    def __init__(self, policy: str):
        self.policy = policy
        self._counter = itertools.count()

    def pick(self, backends: list[Backend], client_ip: str, header_value: str | None,
             exclude: set[str] = frozenset()) -> Backend | None:
        if len(backends) == 1 and not exclude:   # one upstream: the only choice (the rule below)
            return backends[0]
        now = time.monotonic()
        candidates = [b for b in backends if b.url not in exclude]
        if not candidates:
            return None
        healthy = [b for b in candidates if b.available(now)]
        if not healthy:                    # all out: try the one back soonest (failing checks
            return min(candidates, key=lambda b: (not b.healthy, b.ejected_until))   # last)
        if self.policy == "least-conn":            # ties take turns: idle backends share
            low = min(b.in_flight for b in healthy)
            healthy = [b for b in healthy if b.in_flight == low]
        if self.policy.startswith("hash:"):
            key = client_ip if self.policy == "hash:ip" else (header_value or "")
            return max(healthy, key=lambda b: _score(key, b.url))
        return healthy[next(self._counter) % len(healthy)]


def _score(key: str, url: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()
