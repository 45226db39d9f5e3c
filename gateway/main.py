"""`gfs gateway`: worker processes (SO_REUSEPORT on one port), each an event loop on uvloop
serving the proxy, its metrics listener, and the route source it follows."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from gateway import config_store
from gateway.accesslog import AccessLog
from gateway.http.limits import Limits
from gateway.http.server import HttpServer, tls_context
from gateway.memory import Trimmer
from gateway.metrics import GatewayMetrics
from gateway.proxy import Proxy, Refused
from gateway.routing.route import Route
from gateway.sources import FileSource
from gateway.table import ServingTable
from gateway.upstream.health import HealthChecker, HealthSettings
from gateway.upstream.pool import Pools, PoolSettings
from gfs.errors import GfsError
from gfs.memory import REUSED_BUFFERS_MMAP_THRESHOLD, tune_malloc

log = logging.getLogger("gateway")


@dataclass
class GatewayOptions:
    listen: tuple[str, int]
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    routes_file: str | None = None          # follow this JSON file...
    masters: list[str] = field(default_factory=list)   # ...or the masters' routes
    token: str = ""                         # an administrator's (or service account's) token
    tls_ca: str | None = None               # the cluster's CA when it serves TLS
    state_dir: str | None = None            # where the last applied config is kept
    metrics: tuple[str, int] | None = None  # worker i listens on port + i
    access_log: str | None = None           # a file, '-' for stdout, None for none
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    trusted_proxies: list[str] = field(default_factory=list)
    proxy_protocol_from: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    pool: PoolSettings = field(default_factory=PoolSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    s3_key: bytes | None = None             # serve builtin:s3 (gfs/auth/s3keys.py)
    s3_region: str = "us-east-1"
    s3_domains: list[str] = field(default_factory=list)


class Worker:
    """One process's gateway: everything lives on its event loop."""

    def __init__(self, opts: GatewayOptions, index: int = 0):
        self.opts = opts
        self.index = index
        self.metrics = GatewayMetrics()
        self.pools = Pools(opts.pool)
        self.health = HealthChecker()
        stream = None
        if opts.access_log == "-":
            stream = sys.stdout
        elif opts.access_log:
            stream = open(opts.access_log, "a", buffering=1)
        self.proxy = Proxy(ServingTable.build([], opts.allow, opts.deny, opts.trusted_proxies),
                           self.pools, self.metrics, AccessLog(stream) if stream else None,
                           builtins={"metrics": self._metrics_page})
        self.routes: list[Route] = []
        self.revision = 0
        self.confirmed_at = 0.0
        self.server: HttpServer | None = None
        self.metrics.observe_gauges(lambda: (self.pools, len(self.server.connections)
                                             if self.server else 0, self.config_status()))

    @property
    def state_file(self) -> str | None:
        return os.path.join(self.opts.state_dir, "routes.json") if self.opts.state_dir else None

    def config_status(self) -> dict:
        return {"revision": self.revision, "routes": len(self.routes),
                "confirmed_at": self.confirmed_at}

    def apply(self, routes: list[Route], revision: int) -> None:
        table = ServingTable.build(routes, self.opts.allow, self.opts.deny,
                                   self.opts.trusted_proxies, revision)
        self.proxy.apply(table)
        self.routes, self.revision = routes, revision
        self._check_health()
        log.info("worker %d: serving %d routes (revision %d)", self.index, len(routes), revision)
        if self.state_file and self.index == 0:
            config_store.save(self.state_file, routes, revision, time.time())

    def _check_health(self) -> None:
        """Check the upstreams of routes with a health path; an upstream named by several such
        routes is checked as the first of them (by name) says."""
        targets = {}
        for route in sorted(self.routes, key=lambda r: r.name):
            if route.health_path and not route.to[0].startswith("builtin:"):
                settings = self.opts.health.for_route(route)
                for url in route.to:
                    targets.setdefault(self.pools.get(url), (route.health_path, settings))
        self.health.update(targets)

    def confirm(self) -> None:
        self.confirmed_at = time.time()

    def _start_from_saved(self) -> None:
        if self.state_file and os.path.exists(self.state_file):
            routes, revision, confirmed = config_store.load(self.state_file)
            self.proxy.apply(ServingTable.build(routes, self.opts.allow, self.opts.deny,
                                                self.opts.trusted_proxies, revision))
            self.routes, self.revision, self.confirmed_at = routes, revision, confirmed
            self._check_health()
            log.warning("worker %d: serving the saved routes (revision %d, confirmed %.0f s "
                        "ago) until the source answers", self.index, revision,
                        config_store.staleness(confirmed))

    def _follow_masters(self) -> list:
        """Serve the saved routes (if any) until the masters answer; follow their routes and the
        permission feed (for routes that require a token)."""
        from gateway.auth import TokenChecker
        from gateway.masters import MasterSource
        from gfs.auth.watcher import PermissionStore
        opts = self.opts
        self._start_from_saved()
        source = MasterSource(opts.masters, opts.token, self.apply, self.confirm,
                              self.revision, opts.tls_ca)
        store = PermissionStore(opts.masters, opts.token, tls_ca=opts.tls_ca)
        self.proxy.authenticate = TokenChecker(store, Refused)
        self._serve_rest()
        source.start()
        store.start()
        self.sources = (source, store)
        if opts.s3_key is not None:
            self._serve_s3(store)
        return [source, store]

    def _serve_rest(self) -> None:
        """`builtin:rest` (gateway/rest/): its calls go to the masters as each caller, over
        connections of a client with no token of its own."""
        from gateway.rest.app import RestApp
        from gfs.client import Client
        self.proxy.builtins["rest"] = RestApp(Client(self.opts.masters, token="",
                                                     tls_ca=self.opts.tls_ca))

    def _serve_s3(self, store) -> None:
        """The built-in `s3` target: its gfs calls go through this gateway's token acting for
        each request's signer (master/callers.py)."""
        from gateway.s3.credentials import Credentials
        from gateway.s3.server import S3App
        from gfs.aio import AsyncClient
        self.s3_client = AsyncClient(self.opts.masters, token=self.opts.token,
                                     tls_ca=self.opts.tls_ca)
        self.proxy.builtins["s3"] = S3App(self.s3_client, Credentials(store, self.opts.s3_key),
                                          self.opts.s3_region, tuple(self.opts.s3_domains),
                                          self.metrics)

    async def _metrics_page(self, ex) -> None:
        await ex.respond(200, self.metrics.render(),
                         [("content-type", "text/plain; version=0.0.4; charset=utf-8")])

    async def _metrics_app(self, ex) -> None:
        if ex.head.path == "/metrics":
            await self._metrics_page(ex)
        elif ex.head.path == "/status":
            body = json.dumps({"worker": self.index, "pid": os.getpid(),
                               **self.config_status(),
                               "staleness_s": round(config_store.staleness(self.confirmed_at), 3)
                               if self.confirmed_at else None,
                               "connections": len(self.server.connections)}).encode()
            await ex.respond(200, body, [("content-type", "application/json")])
        else:
            await ex.respond(404, b"not found\n")

    async def run(self, ready: asyncio.Event | None = None) -> None:
        opts = self.opts
        follow = None
        watchers = []
        if opts.masters:
            watchers = self._follow_masters()
        elif opts.routes_file:
            source = FileSource(opts.routes_file, self.apply, self.confirm)
            try:
                source.load_now()
            except (OSError, ValueError) as err:
                log.error("route file %s: %s", opts.routes_file, err)
                self._start_from_saved()
            follow = asyncio.get_running_loop().create_task(source.follow())
        else:
            self._start_from_saved()
        self.pools.start()
        tls = tls_context(opts.tls_cert, opts.tls_key) if opts.tls_cert else None
        proxy_from = None
        if opts.proxy_protocol_from:
            from gateway.routing.cidr import PrefixTrie
            proxy_from = PrefixTrie()
            for net in opts.proxy_protocol_from:
                proxy_from.insert(net, True)
        self.server = HttpServer(self.proxy, opts.limits, tls, proxy_from)
        host, port = await self.server.start(*opts.listen, reuse_port=opts.workers > 1)
        trimmer = Trimmer(self.server, on_trim=self.metrics.memory_trims.inc)
        trimmer.start()
        metrics_server = None
        if opts.metrics:
            metrics_server = HttpServer(self._metrics_app, opts.limits)
            await metrics_server.start(opts.metrics[0], opts.metrics[1] + self.index
                                       if opts.metrics[1] else 0)
        log.info("worker %d (pid %d) listening on %s:%d", self.index, os.getpid(), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        if follow is not None:
            follow.cancel()
        for watcher in watchers:
            watcher.stop()
        trimmer.stop()
        await self.server.close()
        if self.proxy.access_log is not None:
            self.proxy.access_log.flush()        # the lines of the last requests
        if metrics_server is not None:
            await metrics_server.close()
        self.health.close()
        self.pools.close()


def run_worker(opts: GatewayOptions, index: int) -> None:
    import uvloop
    tune_malloc(mmap_threshold=REUSED_BUFFERS_MMAP_THRESHOLD)      # gfs/memory.py
    uvloop.run(Worker(opts, index).run())


def _fork_worker(opts: GatewayOptions, index: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run_worker(opts, index)
        except GfsError as err:
            print(f"gfs: worker {index}: {err.code.lower().replace('_', ' ')}: {err.message}",
                  file=sys.stderr, flush=True)
            code = 1
        except BaseException:                 # noqa: BLE001 - a crash: say it, exit non-zero
            import traceback
            traceback.print_exc()
            code = 70
        finally:
            os._exit(code)
    return pid


RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)    # after 1, 2, ... quick deaths in a row
QUICK_DEATH_S = 10.0                               # a worker that lived longer starts afresh


def serve(opts: GatewayOptions) -> int:
    """Run the gateway until SIGTERM/SIGINT: in this process for one worker, else N children.
    A child that dies on its own (a crash, a kill -9) is started again, with a growing pause
    if it keeps dying at once; the others keep serving the port meanwhile."""
    if opts.workers <= 1:
        run_worker(opts, 0)
        return 0
    stopping = False
    children: dict[int, tuple[int, float]] = {}          # pid -> (worker index, started at)
    for i in range(opts.workers):
        children[_fork_worker(opts, i)] = (i, time.monotonic())

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in list(children):
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    quick_deaths: dict[int, int] = {}
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index, started = children.pop(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            if exit_code != 0:
                code = 1
            continue
        if exit_code == 1:                     # a startup error (said on stderr): not retried
            code = 1
            forward(signal.SIGTERM, None)
            continue
        lived = time.monotonic() - started
        quick_deaths[index] = quick_deaths.get(index, 0) + 1 if lived < QUICK_DEATH_S else 0
        pause = RESTART_BACKOFF_S[min(quick_deaths[index], len(RESTART_BACKOFF_S) - 1)]
        log.error("worker %d (pid %d) died (%s) after %.1f s; starting it again in %.1f s",
                  index, pid, f"signal {-exit_code}" if exit_code < 0 else f"exit {exit_code}",
                  lived, pause)
        time.sleep(pause)
        if not stopping:
            children[_fork_worker(opts, index)] = (index, time.monotonic())
    return code
