"""What a Master call costs as a gRPC call of its own and as a message of one `Calls` stream
(gfs/callstream.py), side by side in one run: the no-op stat server of the gRPC floor
(bench/grpc_floor.py: grpc.aio on uvloop, answers at once), called from this process through
grpc.aio and through blocking grpc, by 1 and 16 callers at once; ops/s and CPU µs per call on
each side.

    python -m bench.call_stream [--seconds 3] [--reps 3]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import threading
import time

import grpc

from bench.common import table
from bench.grpc_floor import READY_TIMEOUT, _serve
from gfs.callstream import BlockingCallStream, CallStream
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

REQUEST = pb.StatRequest(path="/bench/stat-target")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def _aio_point(address: str, streamed: bool, callers: int, seconds: float) -> int:
    channel = grpc.aio.insecure_channel(address)
    stream = CallStream(channel, address)
    stub = pb_grpc.MasterStub(channel)
    call = ((lambda: stream.call("Stat", REQUEST, timeout=10)) if streamed
            else (lambda: stub.Stat(REQUEST, timeout=10)))
    for _ in range(200):
        await call()
    stop = time.monotonic() + seconds

    async def worker() -> int:
        n = 0
        while time.monotonic() < stop:
            await call()
            n += 1
        return n
    try:
        return sum(await asyncio.gather(*[worker() for _ in range(callers)]))
    finally:
        await stream.close()
        await channel.close()


def _blocking_point(address: str, streamed: bool, callers: int, seconds: float) -> int:
    channel = grpc.insecure_channel(address)
    stream = BlockingCallStream(channel, address)
    stub = pb_grpc.MasterStub(channel)
    call = ((lambda: stream.call("Stat", REQUEST, timeout=10)) if streamed
            else (lambda: stub.Stat(REQUEST, timeout=10)))
    for _ in range(200):
        call()
    stop = time.monotonic() + seconds
    counts = [0] * callers

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[i] += 1
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(callers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)
    finally:
        stream.close()
        channel.close()


def measure(seconds: float, reps: int) -> list[dict]:
    import uvloop
    spawn = mp.get_context("spawn")
    ports = spawn.Queue()
    server = spawn.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    points = []
    try:
        address = f"127.0.0.1:{ports.get(timeout=READY_TIMEOUT)}"
        for client in ("grpc.aio", "blocking"):
            for callers in (1, 16):
                runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
                for _ in range(reps):
                    for streamed in (False, True):          # in turns: the machine drifts
                        c0, s0 = time.process_time(), _cpu_s(server.pid)
                        if client == "grpc.aio":
                            n = uvloop.run(_aio_point(address, streamed, callers, seconds))
                        else:
                            n = _blocking_point(address, streamed, callers, seconds)
                        runs[streamed].append((n / seconds, 1e6 * (time.process_time() - c0) / n,
                                               1e6 * (_cpu_s(server.pid) - s0) / n))
                for streamed, got in runs.items():
                    points.append({"client": client, "callers": callers, "streamed": streamed,
                                   "ops_s": statistics.median(g[0] for g in got),
                                   "client_us": statistics.median(g[1] for g in got),
                                   "server_us": statistics.median(g[2] for g in got)})
    finally:
        server.kill()
        server.join(timeout=10)
    return points


def report(points: list[dict]) -> str:
    rows = []
    for p in points:
        alone = next(q for q in points if q["client"] == p["client"]
                     and q["callers"] == p["callers"] and not q["streamed"])
        rows.append([p["client"], p["callers"], "stream" if p["streamed"] else "own call",
                     f"{p['ops_s']:,.0f}", f"{p['ops_s'] / alone['ops_s']:.2f}",
                     f"{p['client_us']:.0f}", f"{p['server_us']:.0f}"])
    return table(["client", "callers", "each call as", "calls/s (median)", "× own call",
                  "client CPU µs/call", "server CPU µs/call"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--reps", type=int, default=3, help="runs of each point, in turns")
    args = parser.parse_args()
    print(report(measure(args.seconds, args.reps)))


if __name__ == "__main__":
    main()
