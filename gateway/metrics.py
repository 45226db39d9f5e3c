"""The gateway's Prometheus metrics (one registry per worker process)."""
from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0)
MASTER_CALL_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 64)


class RequestStats:
    """Requests answered by (route, status) and their durations by route, counted in plain
    dicts and lists and turned into metric families at scrape time. Every request is counted
    here, so it is kept cheap: prometheus_client's labelled Counter and Histogram took ~4 µs
    per request (a lock each, a loop over the buckets), this ~1. One event loop per worker
    updates and reads it: no lock."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = buckets
        self._counts: dict[tuple[str, str], int] = {}
        self._histograms: dict[str, list[float]] = {}   # route -> [per bucket..., +Inf, sum]

    def observe(self, route: str, status: str, seconds: float) -> None:
        key = (route, status)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = [0] * (len(self.buckets) + 1) + [0.0]
        histogram[bisect_left(self.buckets, seconds)] += 1     # the first bound >= seconds
        histogram[-1] += seconds

    def count(self, route: str, status: str) -> int:
        return self._counts.get((route, status), 0)

    def families(self):
        requests = CounterMetricFamily("gfs_gateway_requests", "Requests answered, by route and "
                                       "status", labels=["route", "status"])
        for (route, status), n in self._counts.items():
            requests.add_metric([route, status], n)
        seconds = HistogramMetricFamily("gfs_gateway_request_seconds", "Time to the end of the "
                                        "response, by route", labels=["route"])
        for route, histogram in self._histograms.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self.buckets, histogram):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            buckets.append(("+Inf", cumulative + histogram[len(self.buckets)]))
            seconds.add_metric([route], buckets, histogram[-1])
        return [requests, seconds]


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = RequestStats()
        self.upstream_errors = Counter("gfs_gateway_upstream_errors_total", "Failed upstream "
                                       "tries, by upstream and kind", ["upstream", "kind"],
                                       registry=self.registry)
        self.ejections = Counter("gfs_gateway_upstream_ejections_total", "Upstreams taken out "
                                 "after consecutive failures", ["upstream"],
                                 registry=self.registry)
        self.memory_trims = Counter("gfs_gateway_memory_trims_total", "Times freed memory was "
                                    "given back to the system after connections went "
                                    "(gateway/memory.py)", registry=self.registry)
        self.s3_master_calls = Histogram(
            "gfs_gateway_s3_master_calls", "Master RPCs (retries included) one S3 request made, "
            "by HTTP method: a small object's PUT or GET takes one", ["method"],
            buckets=MASTER_CALL_BUCKETS, registry=self.registry)
        self._gauges = None
        self.registry.register(self)

    def observe_gauges(self, fn) -> None:
        """`fn()` -> (pools: Pools, connections: int, config: dict) read at scrape time."""
        self._gauges = fn

    def collect(self):
        yield from self.requests.families()
        if self._gauges is None:
            return
        pools, connections, config = self._gauges()
        open_ = GaugeMetricFamily("gfs_gateway_upstream_connections", "Open upstream "
                                  "connections", labels=["upstream", "state"])
        pending = GaugeMetricFamily("gfs_gateway_upstream_pending", "Requests waiting for an "
                                    "upstream connection", labels=["upstream"])
        inflight = GaugeMetricFamily("gfs_gateway_upstream_in_flight", "Requests in flight",
                                     labels=["upstream"])
        for url, b in pools.backends.items():
            open_.add_metric([url, "idle"], len(b.idle))
            open_.add_metric([url, "open"], b.open_connections)
            pending.add_metric([url], b.pending)
            inflight.add_metric([url], b.in_flight)
        yield open_
        yield pending
        yield inflight
        yield GaugeMetricFamily("gfs_gateway_client_connections", "Open client connections",
                                value=connections)
        yield GaugeMetricFamily("gfs_gateway_config_revision", "Revision of the routes served",
                                value=config.get("revision", 0))
        yield GaugeMetricFamily("gfs_gateway_routes", "Routes served",
                                value=config.get("routes", 0))
        updated = config.get("confirmed_at")
        yield GaugeMetricFamily("gfs_gateway_config_staleness_seconds",
                                "Seconds since the routes were last confirmed current by their "
                                "source (-1: never)",
                                value=(time.time() - updated) if updated else -1)

    def describe(self):
        return []

    def render(self) -> bytes:
        return generate_latest(self.registry)
