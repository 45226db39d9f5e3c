"""The master daemon: Raft node + gRPC server + /metrics, until SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc

from gfs import logs, metrics
from gfs.errors import FailedPrecondition
from master.node import MasterNode
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
          defaults: dict | None = None, workers: int = 64, dead_after: float = 10.0) -> int:
    """Run a master until it is told to stop; returns the process exit code."""
    logs.setup(f"master-{node_id}")
    node = MasterNode(node_id, raft_address, grpc_address, parse_peers(peers), data_dir,
                      raft_config, defaults, dead_after)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_MasterServicer_to_server(MasterService(node), server)
    try:
        server.add_insecure_port(grpc_address)
    except RuntimeError as err:
        raise FailedPrecondition(f"cannot listen on {grpc_address}: {err}") from None
    host, port = metrics.serve(metrics_address)
    node.metrics_address = f"{host}:{port}"
    node.start()
    server.start()
    log.info("master %d serving gRPC on %s, raft on %s, metrics on %s:%d", node_id,
             grpc_address, raft_address, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("master %d stopping", node_id)
    server.stop(grace=2).wait()
    node.stop()
    return 0
