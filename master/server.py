"""The master daemon: Raft node + gRPC server + /metrics, until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import grpc
from prometheus_client import REGISTRY

from gfs import logs, metrics, sdnotify
from gfs.errors import FailedPrecondition
from gfs.memory import tune_malloc
from master.node import MasterNode, RaftCollector
from master.raft import RaftConfig
from master.service import MasterService
from proto import master_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def parse_peers(peers: str) -> dict[str, str]:
    """`RAFT[@GRPC],...` -> {raft address: gRPC address or ""}."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in peers.split(","))):
        raft, _, grpc_addr = item.partition("@")
        out[raft] = grpc_addr
    return out


def serve(node_id: int, raft_address: str, peers: str, grpc_address: str, data_dir: str,
          metrics_address: str, raft_config: RaftConfig | None = None,
          defaults: dict | None = None, dead_after: float = 10.0, gc_grace: float = 3600.0,
          trash_retention: float = 86400.0, repair_concurrency: int = 2, repair_rate: int = 0,
          tiering: dict | None = None, balance: dict | None = None, session_ttl: float = 86400.0,
          switch_interval: float = float(os.environ.get("GFS_SWITCH_INTERVAL", "0.0005"))) -> int:
    """Run a master until it is told to stop; returns the process exit code."""
    logs.setup(f"master-{node_id}")
    tune_malloc()
    # The gRPC event loop and the Raft tick thread hand requests to each other on every command;
    # with the default 5 ms GIL switch interval each handoff can wait that long.
    sys.setswitchinterval(switch_interval)
    node = MasterNode(node_id, raft_address, grpc_address, parse_peers(peers), data_dir,
                      raft_config, defaults, dead_after, gc_grace, trash_retention,
                      repair_concurrency, repair_rate, tiering, balance, session_ttl)
    REGISTRY.register(RaftCollector(node))
    host, port = metrics.serve(metrics_address)
    node.metrics_address = f"{host}:{port}"
    node.start()
    try:
        asyncio.run(_serve_grpc(node, grpc_address))
    finally:
        node.stop()
    return 0


async def _serve_grpc(node: MasterNode, grpc_address: str) -> None:
    """The gRPC front end on asyncio: one event loop thread instead of a thread per request;
    replicated commands wait on futures that the Raft tick thread resolves."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_MasterServicer_to_server(MasterService(node), server)
    try:
        server.add_insecure_port(grpc_address)
    except RuntimeError as err:
        raise FailedPrecondition(f"cannot listen on {grpc_address}: {err}") from None
    await server.start()
    log.info("master %d serving gRPC on %s, raft on %s, metrics on %s", node.node_id,
             grpc_address, node.raft_address, node.metrics_address)
    sdnotify.ready(f"master {node.node_id} serving gRPC on {grpc_address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("master %d stopping", node.node_id)
    sdnotify.stopping()
    await server.stop(grace=2)
