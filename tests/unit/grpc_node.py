"""A chunkserver's store and gRPC service in this process, on 127.0.0.1 (unit tests only)."""
from __future__ import annotations

from concurrent import futures

import grpc

from chunkserver.service import ChunkserverService
from chunkserver.store import ChunkStore
from gfs.auth.daemon import DaemonAuth
from gfs.transfer import CHANNEL_OPTIONS, Channels
from proto import chunkserver_pb2_grpc as cpb_grpc


CLUSTER_SECRET = bytes(range(32))        # what the nodes and the tests' daemon channels share


def daemon_channels() -> Channels:
    """Channels that sign like another daemon of the test cluster (reads, copies, moves)."""
    return Channels(DaemonAuth(CLUSTER_SECRET))


class Node:
    """One chunkserver service over its own store, served on 127.0.0.1:<free port>."""

    def __init__(self, root):
        self.store = ChunkStore(str(root))
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=CHANNEL_OPTIONS)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.changes = 0
        self.service = ChunkserverService(self.store, self.address, "r1",
                                          on_change=self._changed,
                                          cluster_secret=CLUSTER_SECRET)
        cpb_grpc.add_ChunkserverServicer_to_server(self.service, self.server)
        self.server.start()

    def _changed(self) -> None:
        self.changes += 1

    def stop(self) -> None:
        self.server.stop(0).wait()
        self.service.channels.close()
