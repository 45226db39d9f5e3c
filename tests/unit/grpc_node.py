"""A chunkserver's store and gRPC service in this process, on 127.0.0.1 (unit tests only)."""
from __future__ import annotations

from concurrent import futures

import grpc

from chunkserver.service import ChunkserverService
from chunkserver.store import ChunkStore
from gfs.transfer import CHANNEL_OPTIONS
from proto import chunkserver_pb2_grpc as cpb_grpc


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
                                          on_change=self._changed)
        cpb_grpc.add_ChunkserverServicer_to_server(self.service, self.server)
        self.server.start()

    def _changed(self) -> None:
        self.changes += 1

    def stop(self) -> None:
        self.server.stop(0).wait()
        self.service.channels.close()
