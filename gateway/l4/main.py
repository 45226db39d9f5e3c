"""`gfs lb`: one event loop (uvloop) balancing TCP connections or UDP datagrams over backends,
with active checks (TCP), Prometheus /metrics and JSON logs."""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, REGISTRY

from gateway.l4 import backends as checks
from gateway.l4.backends import CHECKS, L4Backend
from gateway.l4.tcp import TcpBalancer
from gateway.l4.udp import UdpBalancer
from gateway.upstream.balance import Balancer
from gateway.upstream.health import HealthSettings
from gfs.metrics import serve as serve_metrics

log = logging.getLogger("gateway.lb")
POLICIES = ("least-conn", "round-robin", "hash:ip")


@dataclass
class LbOptions:
    listen: tuple[str, int]
    backends: list[L4Backend]
    udp: bool = False
    policy: str = "least-conn"
    proxy_protocol: bool = False
    connect_timeout_s: float = 1.0
    checks: HealthSettings = CHECKS
    udp_retry_s: float = 5.0                # how long a failed UDP backend (no checks) sits out
    udp_idle_s: float = 30.0
    max_udp_sessions: int = 10_000
    metrics: str | None = None              # HOST:PORT for /metrics, served once listening


class LbMetrics:
    """The balancer's counters, plus per-backend gauges read at scrape time."""

    def __init__(self, backends: list[L4Backend], open_connections):
        self.connections = Counter("gfs_lb_connections_total", "Connections (TCP) or sessions "
                                   "(UDP) sent to a backend", ["backend"])
        self.connect_failures = Counter("gfs_lb_connect_failures_total", "Backend connections "
                                        "refused or timed out (retried on another backend)",
                                        ["backend"])
        self.refused = Counter("gfs_lb_refused_total", "Clients closed because no backend "
                               "could be reached")
        self.bytes = Counter("gfs_lb_bytes_total", "Bytes moved, up (client to backend) and "
                             "down", ["direction"])
        self.udp_dropped = Counter("gfs_lb_udp_dropped_total", "Datagrams dropped (no backend, "
                                   "or a session's queue full)")
        self._backends, self._open = backends, open_connections
        REGISTRY.register(self)

    def collect(self):
        up = GaugeMetricFamily("gfs_lb_backend_up", "1 while a backend takes new connections",
                               labels=["backend"])
        active = GaugeMetricFamily("gfs_lb_backend_active", "Open connections (TCP) or "
                                   "sessions (UDP) per backend", labels=["backend"])
        now = time.monotonic()
        for b in self._backends:
            up.add_metric([b.url], 1.0 if b.available(now) else 0.0)
            active.add_metric([b.url], b.in_flight)
        yield up
        yield active
        yield GaugeMetricFamily("gfs_lb_client_connections", "Open client connections",
                                value=self._open())


async def run(opts: LbOptions, ready: asyncio.Event | None = None) -> None:
    balancer = Balancer(opts.policy)

    def pick(backends: list[L4Backend], client_ip: str, tried: set[str]) -> L4Backend | None:
        return balancer.pick(backends, client_ip, None, tried)

    tcp: TcpBalancer | None = None
    udp: UdpBalancer | None = None
    metrics = LbMetrics(opts.backends, lambda: tcp.open if tcp else len(udp.sessions) if udp else 0)
    watchers: list[asyncio.Task] = []
    loop = asyncio.get_running_loop()
    if opts.udp:
        udp = UdpBalancer(opts.backends, pick, metrics, opts.udp_retry_s, opts.udp_idle_s,
                          opts.max_udp_sessions)
        host, port = await udp.start(*opts.listen)
    else:
        tcp = TcpBalancer(opts.backends, pick, opts.connect_timeout_s, opts.proxy_protocol,
                          metrics, retry_s=None)
        host, port = await tcp.start(*opts.listen)
        watchers = [loop.create_task(checks.watch(b, opts.checks, opts.proxy_protocol))
                    for b in opts.backends]
    if opts.metrics:
        serve_metrics(opts.metrics)
    log.info("balancing %s on %s:%d over %s (%s%s)", "UDP" if opts.udp else "TCP", host, port,
             ", ".join(b.url for b in opts.backends), opts.policy,
             ", PROXY protocol v2" if opts.proxy_protocol else "")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    for task in watchers:
        task.cancel()
    if tcp is not None:
        await tcp.close()
    if udp is not None:
        await udp.close()


def serve(opts: LbOptions) -> None:
    import uvloop
    uvloop.run(run(opts))
