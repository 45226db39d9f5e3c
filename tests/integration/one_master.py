"""What one particular master holds (not the leader's answer): for tests of a master that came
back with an empty disk."""
from __future__ import annotations

import grpc

from gfs.auth.tokens import bearer
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc


def paths_on(cluster, name: str, path: str = "/") -> set[str]:
    """The paths under `path` in master `name`'s own store (a stale read served by that master;
    empty while it does not answer)."""
    with grpc.insecure_channel(cluster.daemon(name)["grpc"]) as ch:
        try:
            entries = pb_grpc.MasterStub(ch).List(
                pb.ListRequest(path=path, stale_ok=True, limit=10000), timeout=2,
                metadata=bearer(cluster.admin_token)).entries
        except grpc.RpcError:
            return set()
    return {e.path for e in entries}
