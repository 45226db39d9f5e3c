"""The master daemon: Raft node + gRPC server + /metrics, until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import grpc
import uvloop
from prometheus_client import REGISTRY

from gfs import logs, metrics, planted, sdnotify
from gfs.auth import insecure
from gfs.auth.tls import TlsFiles
from gfs.auth.tokens import token_hash
from gfs.errors import FailedPrecondition, GfsError
from gfs.memory import LMDB_TXN_MMAP_THRESHOLD, tune_malloc
from gfs.rpcguard import AsyncRequestGuard
from master import fastprobe
from master.membership import parse_members
from master.node import MasterNode, RaftCollector
from master.raft import RaftConfig
from master.identity_service import IdentityService
from master.oidc_service import OidcService
from master.routes_service import RoutesService
from master.service import MasterService
from proto import identity_pb2_grpc as ipb_grpc
from proto import oidc_pb2_grpc as opb_grpc
from proto import routes_pb2_grpc as rpb_grpc
from proto import master_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# The largest request a master accepts (grpc's default, stated): larger ones are refused with
# RESOURCE_EXHAUSTED before they are decoded. A full heartbeat report is the largest request
# (about 25 bytes per chunk: some 160,000 chunks per chunkserver).
MAX_REQUEST_BYTES = 4 << 20


def serve(node_id: int, raft_address: str, peers: str, grpc_address: str, data_dir: str,
          metrics_address: str, raft_config: RaftConfig | None = None,
          defaults: dict | None = None, dead_after: float = 10.0, gc_grace: float = 3600.0,
          trash_retention: float = 86400.0, repair_concurrency: int = 2, repair_rate: int = 0,
          tiering: dict | None = None, balance: dict | None = None, session_ttl: float = 86400.0,
          space: dict | None = None,
          switch_interval: float = float(os.environ.get("GFS_SWITCH_INTERVAL", "0.0005")),
          admin_token_file: str | None = None, *, cluster_secret: bytes,
          capability_ttl: float = 60.0, tls: TlsFiles | None = None,
          insecure_no_auth: bool = False, joining: bool = False) -> int:
    """Run a master until it is told to stop; returns the process exit code."""
    logs.setup(f"master-{node_id}")
    insecure.announce("master", insecure_no_auth)
    planted.check_at_start()
    tune_malloc(mmap_threshold=LMDB_TXN_MMAP_THRESHOLD)            # gfs/memory.py
    # The gRPC event loop and the Raft tick thread hand requests to each other on every command;
    # with the default 5 ms GIL switch interval each handoff can wait that long.
    sys.setswitchinterval(switch_interval)
    node = MasterNode(node_id, raft_address, grpc_address, parse_members(peers), data_dir,
                      raft_config, defaults, dead_after, gc_grace, trash_retention,
                      repair_concurrency, repair_rate, tiering, balance, session_ttl, space,
                      admin_token_hash=read_admin_token(admin_token_file),
                      cluster_secret=cluster_secret, capability_ttl=capability_ttl,
                      tls_ca=tls.ca_pem() if tls else None, insecure_no_auth=insecure_no_auth,
                      joining=joining)
    REGISTRY.register(RaftCollector(node))
    host, port = metrics.serve(metrics_address)
    node.metrics_address = f"{host}:{port}"
    node.start()
    try:
        # uvloop: less CPU per request than asyncio's own loop (docs/benchmarks.md).
        uvloop.run(_serve_grpc(node, grpc_address, tls))
    finally:
        node.stop()
    return 0


def read_admin_token(path: str | None) -> bytes | None:
    """The hash of the first administrator's token (the file holds the token; only its hash is
    kept in memory and in the state), or None when no file is given."""
    if not path:
        return None
    try:
        with open(path) as f:
            return token_hash(f.read().strip())
    except OSError as err:
        raise FailedPrecondition(f"cannot read the admin token file {path}: {err.strerror}") from None
    except GfsError as err:
        raise FailedPrecondition(f"the admin token file {path} holds no valid token: "
                                 f"{err.message}") from None


async def _serve_grpc(node: MasterNode, grpc_address: str, tls: TlsFiles | None) -> None:
    """The gRPC front end on asyncio: one event loop thread instead of a thread per request;
    replicated commands wait on futures that the Raft tick thread resolves."""
    server = grpc.aio.server(interceptors=[AsyncRequestGuard("master")],
                             options=[("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
    service = MasterService(node)
    pb_grpc.add_MasterServicer_to_server(service, server)
    ipb_grpc.add_IdentityServicer_to_server(IdentityService(service), server)
    opb_grpc.add_OidcServicer_to_server(OidcService(service), server)
    rpb_grpc.add_RoutesServicer_to_server(RoutesService(service), server)
    try:
        if tls is not None:
            server.add_secure_port(grpc_address, tls.server_credentials())
        else:
            server.add_insecure_port(grpc_address)
    except RuntimeError as err:
        raise FailedPrecondition(f"cannot listen on {grpc_address}: {err}") from None
    await server.start()
    # Read-index probes over UDP on this loop (master/fastprobe.py); without the port, reads
    # take their rounds over the Raft connections.
    probes = await fastprobe.open_endpoint(node.raft, node.raft.probe_codec)
    pinging = asyncio.create_task(probes.ping_forever()) if probes else None
    node.raft.probe_endpoint = probes
    log.info("master %d serving gRPC%s%s on %s, raft on %s, metrics on %s", node.node_id,
             " (TLS)" if tls else "", " (INSECURE: no authentication)" if node.insecure_no_auth
             else "", grpc_address, node.raft_address, node.metrics_address)
    sdnotify.ready(f"master {node.node_id} serving gRPC on {grpc_address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("master %d stopping", node.node_id)
    node.raft.probe_endpoint = None
    if pinging is not None:
        pinging.cancel()
        probes.transport.close()
    sdnotify.stopping()
    await server.stop(grace=2)
