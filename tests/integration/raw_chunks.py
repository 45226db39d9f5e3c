"""Talking to one chunkserver directly, bypassing the client (tests against real daemons)."""
from __future__ import annotations

import grpc

from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc


def read_replica(address: str, handle: int, version: int, capability: bytes) -> bytes:
    """The whole replica as `address` serves it to a holder of `capability`."""
    with grpc.insecure_channel(address) as ch:
        stream = cpb_grpc.ChunkserverStub(ch).ReadChunk(
            cpb.ReadRequest(handle=handle, version=version, offset=0, length=-1,
                            capability=capability), timeout=10)
        return b"".join(r.data for r in stream)
