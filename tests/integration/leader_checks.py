"""A check several tests make of a Raft group: a leader paused (SIGSTOP) while the others
elect a new one and write never answers a read as current when it wakes."""
from __future__ import annotations

import signal

import grpc

from gfs.auth.tokens import bearer
from gfs.client import Client
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc


def paused_leader_serves_no_stale_read(c) -> None:
    """Pause `c`'s leader, write through the others, wake it: a linearizable read it answers
    must include the write; otherwise it must refuse (UNAVAILABLE or a deadline)."""
    old = c.leader()
    old_addr = c.daemon(old)["grpc"]
    c.signal(old, signal.SIGSTOP)
    try:
        others = [d["grpc"] for d in c.daemons() if d["name"] != old]
        with Client(others, deadline=20, token=c.admin_token) as client:
            client.mkdir("/written-while-paused")
    finally:
        c.signal(old, signal.SIGCONT)
    with grpc.insecure_channel(old_addr) as ch:
        try:
            pb_grpc.MasterStub(ch).Stat(pb.StatRequest(path="/written-while-paused"), timeout=5,
                                        metadata=bearer(c.admin_token))
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED), err
