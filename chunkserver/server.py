"""The chunkserver daemon: chunk store (hot and cold tiers) + gRPC data service + heartbeats +
scrubber + /metrics."""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc

from chunkserver.bulk import BulkServer
from chunkserver.heartbeat import Heartbeater
from chunkserver.scrubber import Scrubber
from chunkserver.service import BYTES, ChunkserverService
from chunkserver.store import ChunkStore
from gfs import logs, metrics, planted, sdnotify
from gfs.auth import insecure
from gfs.auth.capability import READ
from gfs.auth.tls import TlsFiles
from gfs.errors import FailedPrecondition
from gfs.memory import REUSED_BUFFERS_MMAP_THRESHOLD, tune_malloc
from gfs.rpcguard import RequestGuard
from gfs.transfer import CHANNEL_OPTIONS, MAX_REQUEST_BYTES
from proto import chunkserver_pb2_grpc as cpb_grpc

log = logging.getLogger(__name__)


def server_options() -> list[tuple[str, int]]:
    """The client channels' options, but receiving at most MAX_REQUEST_BYTES per message."""
    return [(k, v) for k, v in CHANNEL_OPTIONS if k != "grpc.max_receive_message_length"] + [
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.so_reuseport", 0)]


def serve(data_dir: str, masters: list[str], bind: str, advertise_host: str | None, rack: str,
          metrics_address: str, heartbeat_interval: float = 1.0, workers: int = 32,
          max_chunk_size: int = 64 << 20, *, scrub_rate: int = 16 << 20,
          scrub_interval: float = 86400.0, cold_dir: str | None = None,
          capacity: int = 0, cluster_secret: bytes, tls: TlsFiles | None = None,
          insecure_no_auth: bool = False, bulk_port: int = 0) -> int:
    """Run a chunkserver until SIGTERM/SIGINT; returns the process exit code.

    cold_dir: the cold tier's directory, normally on its own disk (default: <data_dir>/cold,
    on the same disk as the hot tier); created if missing.

    capacity: the most bytes gfs stores here, both tiers together (0: as much as the disks
    hold); writes and copies beyond it are refused with RESOURCE_EXHAUSTED (new chunk writes
    already beyond it less the repair reserve, gfs/space.py), and the master sees it as this
    server's capacity when it places chunks and balances disk use.

    bulk_port: the port of the bulk data protocol (chunkserver/bulk.py), on the host of
    `bind` (0: any free port; the Status RPC names it to readers).

    scrub_rate: bytes per second the scrubber may read (0: no scrub passes; checks the master
    asks for still run); scrub_interval: seconds between the starts of two scrub passes.
    """
    logs.setup("chunkserver")
    insecure.announce("chunkserver", insecure_no_auth)
    planted.check_at_start()
    tune_malloc(mmap_threshold=REUSED_BUFFERS_MMAP_THRESHOLD)        # gfs/memory.py
    store = ChunkStore(data_dir, cold_dir=cold_dir, capacity=capacity,
                       max_chunk_size=max_chunk_size)
    scrubber = Scrubber(store, scrub_rate, scrub_interval)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         interceptors=[RequestGuard("chunkserver")],
                         options=server_options())
    try:
        port = (server.add_secure_port(bind, tls.server_credentials()) if tls is not None
                else server.add_insecure_port(bind))
    except RuntimeError as err:
        raise FailedPrecondition(f"cannot listen on {bind}: {err}") from None
    host = advertise_host or bind.rsplit(":", 1)[0]
    address = f"{host}:{port}"
    service = ChunkserverService(store, address, rack, scrubber=scrubber,
                                 cluster_secret=cluster_secret,
                                 tls_ca=tls.ca_pem() if tls else None,
                                 insecure_no_auth=insecure_no_auth)
    cpb_grpc.add_ChunkserverServicer_to_server(service, server)
    try:
        bulk = BulkServer(bind.rsplit(":", 1)[0], bulk_port,
                          lambda cap, handle, version: service.authorize_capability(
                              cap, handle, version, READ),
                          service.open_read, writes=service,
                          tls=tls.ssl_server_context() if tls else None,
                          on_bytes=BYTES.labels("out").inc, on_bytes_in=BYTES.labels("in").inc)
    except OSError as err:
        raise FailedPrecondition(f"cannot listen on {bind.rsplit(':', 1)[0]}:{bulk_port} "
                                 f"(bulk port): {err}") from None
    service.bulk_port = bulk.port
    mhost, mport = metrics.serve(metrics_address)
    service.metrics_address = f"{mhost}:{mport}"
    beats = Heartbeater(store, address, rack, masters, heartbeat_interval,
                        daemon_auth=None if insecure_no_auth else service.daemon_auth,
                        on_verify=scrubber.request,
                        on_keys=service.capabilities.set_keys, tls_ca=tls.ca if tls else None)
    # The master hears at once of a replica found corrupt (by the scrubber or by any read) and
    # of a chunk copied here or moved between tiers, instead of at the next regular heartbeat.
    store.on_corrupt = lambda handle, version, reason: beats.poke()
    scrubber.on_corrupt = beats.poke
    service.on_change = beats.poke
    service.on_keys_needed = beats.poke
    server.start()
    bulk.start()
    beats.start()
    scrubber.start()
    tiers = {t["name"]: t["chunk_count"] for t in store.usage()["tiers"]}
    log.info("chunkserver %s serving%s%s (bind %s), %d chunks (%d hot, %d cold in %s; %d marked "
             "corrupt), metrics on %s, scrubbing %s", address, " TLS" if tls else "",
             " INSECURE (no authentication)" if insecure_no_auth else "", bind, len(store.chunks()),
             tiers["hot"], tiers["cold"], store.cold_dir, len(store.corrupt()),
             service.metrics_address,
             f"{scrub_rate} B/s every {scrub_interval:g} s" if scrub_rate else "off")
    sdnotify.ready(f"chunkserver {address} serving")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        service.master_leader = beats.leader
    log.info("chunkserver %s stopping", address)
    sdnotify.stopping()
    scrubber.stop()
    beats.stop()
    bulk.stop()
    server.stop(grace=2).wait()
    return 0
