"""CPU per operation of each master (and of the clients) under one metadata load: the probe
behind the "Cheaper reads" table of the README, for before/after comparisons of the masters'
own cost, which moves less with the machine's phase than ops/s does.

    PYTHONPATH=. python -m bench.cpu_per_op --op stat --clients 16 [--seconds 6] [--lease]
        [--precreate 30] [--py-spy FILE]

A fresh 3-master cluster (secure, as the benchmarks start it), the metadata benchmark's
operation (`bench.metadata:gfs_op`: create, stat, list, rename) or the small-file benchmark's
4 KiB put (`--op put`), from the same client processes (bench.load). Prints ops/s, p50/p99,
and CPU ms per operation (user+system, from /proc) of the leader, each follower and the client
processes over the measured window and its warm-up. `--precreate S`: S seconds of 64-client
creates first (a bigger namespace and log); `--py-spy FILE`: a raw py-spy profile of the leader
(threads, idle excluded) over the window; `--perf-trace FILE`: the three masters' system calls
(`perf trace -T`, Linux perf) over 0.4 s of the window, for bench.write_phases.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from bench import clusters, metadata
from bench.common import process_stats
from bench.load import LoadPool

OPS = ("create", "stat", "list", "rename", "put")


def _py_spy() -> str:
    """py-spy from PATH, else beside this Python (the project's virtualenv)."""
    return shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")


def _cpu(pid: int) -> float:
    return process_stats(pid)["cpu_s"] or 0.0


def _spec(cluster, op: str, directory: str) -> tuple[str, dict]:
    base = {"masters": cluster.master_addresses(), "token": cluster.admin_token}
    if op == "put":
        return "bench.smallfiles:gfs_op", {**base, "op": "put", "dir": directory, "seed": 7}
    return "bench.metadata:gfs_op", {**base, **metadata.gfs_spec(op, directory)}


PERF_TRACE_S = 0.4        # s of system calls --perf-trace records (tracing slows every call)


def measure(op: str, clients: int, seconds: float, lease: bool = False, precreate: float = 0.0,
            py_spy: str | None = None, warmup: float = 1.0, perf_trace: str | None = None
            ) -> dict:
    """One window of `op` at `clients`; ops/s, latencies and CPU ms per op by process."""
    work = tempfile.mkdtemp(prefix="gfs-cpu-per-op-")
    try:
        return _measure(work, op, clients, seconds, lease, precreate, py_spy, warmup,
                        perf_trace)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trace_later(delay: float, pids: list[int], out: str) -> threading.Thread:
    """`perf trace -T` of `pids` for PERF_TRACE_S, starting `delay` seconds from now."""
    def run() -> None:
        subprocess.run(["perf", "trace", "-T", "-p", ",".join(map(str, pids)), "-o", out,
                        "--", "sleep", str(PERF_TRACE_S)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    thread = threading.Timer(delay, run)
    thread.start()
    return thread


def _measure(work: str, op: str, clients: int, seconds: float, lease: bool, precreate: float,
             py_spy: str | None, warmup: float, perf_trace: str | None = None) -> dict:
    options = {"master": {"read-mode": "lease"}} if lease else None
    with LoadPool() as pool, clusters.gfs(work, "cluster", options=options) as cluster, \
            cluster.client(deadline=60) as c:
        metadata.prepare_gfs(c)
        if precreate:
            c.mkdir("/bench/pre")
            factory, spec = _spec(cluster, "create", "/bench/pre")
            pool.measure(factory, spec, 64, precreate, 0.5, "pre")
        c.mkdir("/bench/window")
        factory, spec = _spec(cluster, op, "/bench/window")
        leader = cluster.pid(cluster.leader())
        masters = {d["name"]: cluster.pid(d["name"]) for d in cluster.daemons()}
        spy = None
        if py_spy:
            spy = subprocess.Popen([_py_spy(), "record", "-o", py_spy, "-f", "raw", "--pid",
                                    str(leader), "-d", str(int(seconds + warmup + 1)), "-r",
                                    "200", "--threads"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tracer = (_trace_later(warmup + seconds / 2, list(masters.values()), perf_trace)
                  if perf_trace else None)
        clients_cpu = lambda: sum(_cpu(pid) for pid in pool.pids())
        before = {name: _cpu(pid) for name, pid in masters.items()}
        before["clients"] = clients_cpu()
        r = pool.measure(factory, spec, clients, seconds, warmup, "window")
        after = {name: _cpu(pid) for name, pid in masters.items()}
        after["clients"] = clients_cpu()
        if spy:
            spy.wait()
        if tracer:
            tracer.join()
        ops = r["ops"] * (seconds + warmup) / seconds       # the warm-up's share, estimated
        cpu = {("leader" if masters.get(name) == leader else name):
               (after[name] - before[name]) / ops * 1e3 for name in before}
        return {"op": op, "clients": clients, "lease": lease, "ops_s": r["ops_s"],
                "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["errors"],
                "cpu_ms_per_op": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", choices=OPS, default="stat")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--lease", action="store_true", help="masters with --read-mode lease")
    ap.add_argument("--precreate", type=float, default=0.0, metavar="S")
    ap.add_argument("--py-spy", metavar="FILE")
    ap.add_argument("--perf-trace", metavar="FILE",
                    help="the masters' system calls for bench.write_phases (needs Linux perf)")
    a = ap.parse_args(argv)
    res = measure(a.op, a.clients, a.seconds, a.lease, a.precreate, a.py_spy,
                  perf_trace=a.perf_trace)
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in sorted(res["cpu_ms_per_op"].items()))
    print(f"{res['op']} x{res['clients']}{' (lease)' if res['lease'] else ''}: "
          f"{res['ops_s']:,.0f} ops/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, "
          f"errors {res['errors']}; CPU ms/op: {cpu}")
    return 0


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    sys.exit(main())
