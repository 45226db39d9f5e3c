"""The Python gRPC floor of a stat: what the metadata benchmark's stat would reach if the masters
did nothing but answer it — a grpc.aio server on uvloop (the library and event loop the masters
serve with; the stats arrive as messages of one stream per client, as at the masters) whose Stat
returns a fixed FileInfo at once, no Raft, no LMDB, no identity check, driven by
the same client processes and the same gfs Client as the benchmark.

No master answering stats through grpc.aio in one process serves them faster than this on the
machine of the run, so it is the reference that tells how much of the gap to etcd (Go) is the
masters' own work and how much the RPC layer they are built on. Measured in the same run, beside gfs and etcd.
"""
from __future__ import annotations

import multiprocessing as mp

from bench.common import num, ratio, rng, table
from bench.load import LoadPool, sweep

READY_TIMEOUT = 30.0


def _serve(ports) -> None:
    """The no-op server (in its own process, killed by PID when the sweep ends): binds a free
    loopback port and reports it. It checks no token on purpose (a floor does no work); it
    only parses protobuf requests and answers a constant, so nothing it reads is unpickled or
    executed, and nothing beyond this machine reaches it."""
    import grpc
    import uvloop

    from master import callstream
    from proto import master_pb2 as pb
    from proto import master_pb2_grpc as pb_grpc

    class NoOpMaster(callstream.CallsServicer, pb_grpc.MasterServicer):
        """Stat answered at once, as a call of its own or as a message of the stream the
        gfs Client sends its calls over (master/callstream.py), as the masters serve both."""

        async def Stat(self, request, context):
            return pb.StatResponse(info=pb.FileInfo(path=request.path, inode=2, type="dir",
                                                    mode=0o755, owner="admin"))

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_MasterServicer_to_server(NoOpMaster(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ports.put(port)
        await server.wait_for_termination()
    uvloop.run(main())                        # the masters' event loop (master/server.py)


def stat_op(spec: dict, worker: str):
    """One benchmark thread's operation: a stat through the gfs Client (run in the pool)."""
    from gfs.client import Client
    c = Client(spec["masters"], deadline=30, token=spec["token"])
    return (lambda: c.stat("/bench/stat-target")), c.close


def run(pool: LoadPool, cfg: dict, ctx=None) -> dict:
    """Stat against the no-op server at every concurrency of `cfg` (its reps, windows)."""
    from gfs.auth.tokens import new_token      # any well-formed token: nothing checks it
    token = new_token()
    spawn = mp.get_context("spawn")
    ports = spawn.Queue()
    server = spawn.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=READY_TIMEOUT)
        spec = {"masters": [f"127.0.0.1:{port}"], "token": token}
        return {"points": sweep(pool, "bench.grpc_floor:stat_op", lambda op, conc, rep: spec,
                                ["stat"], cfg["concurrency"], cfg["reps"], cfg["seconds"],
                                cfg["warmup"], "grpc-floor")}
    finally:
        server.kill()                 # by its PID (multiprocessing's handle)
        server.join(timeout=10)


def report(res: dict) -> str:
    """The floor beside gfs's and etcd's stat, per concurrency ('' without a floor)."""
    floor = (res.get("grpc_floor") or {}).get("points") or []
    if not floor:
        return ""
    stat = lambda side: {p["concurrency"]: p["ops_s"]["median"]
                         for p in res[side].get("points", []) if p["op"] == "stat"}
    gfs, etcd = stat("gfs"), stat("etcd")
    rows = [[p["concurrency"], num(p["ops_s"]["median"]), rng(p["ops_s"]),
             num(gfs.get(p["concurrency"])), ratio(gfs.get(p["concurrency"]), p["ops_s"]["median"]),
             num(etcd.get(p["concurrency"])), ratio(etcd.get(p["concurrency"]), p["ops_s"]["median"])]
            for p in floor]
    return ("The Python gRPC floor: stat against a server that answers at once (grpc.aio on "
            "uvloop, the calls arriving over one stream per client as at the masters; no Raft, "
            "no LMDB, no checks; bench/grpc_floor.py), same clients, same run — the most a "
            "master answering stats through grpc.aio in one process could do on this "
            "machine.\n\n"
            + table(["clients", "no-op server stat ops/s", "range", "gfs stat ops/s",
                     "gfs ÷ floor", "etcd stat ops/s", "etcd ÷ floor"], rows))
