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
(threads, idle excluded) over the window.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

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


def measure(op: str, clients: int, seconds: float, lease: bool = False, precreate: float = 0.0,
            py_spy: str | None = None, warmup: float = 1.0) -> dict:
    """One window of `op` at `clients`; ops/s, latencies and CPU ms per op by process."""
    work = tempfile.mkdtemp(prefix="gfs-cpu-per-op-")
    try:
        return _measure(work, op, clients, seconds, lease, precreate, py_spy, warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: str, op: str, clients: int, seconds: float, lease: bool, precreate: float,
             py_spy: str | None, warmup: float) -> dict:
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
        clients_cpu = lambda: sum(_cpu(pid) for pid in pool.pids())
        before = {name: _cpu(pid) for name, pid in masters.items()}
        before["clients"] = clients_cpu()
        r = pool.measure(factory, spec, clients, seconds, warmup, "window")
        after = {name: _cpu(pid) for name, pid in masters.items()}
        after["clients"] = clients_cpu()
        if spy:
            spy.wait()
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
    a = ap.parse_args(argv)
    res = measure(a.op, a.clients, a.seconds, a.lease, a.precreate, a.py_spy)
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in sorted(res["cpu_ms_per_op"].items()))
    print(f"{res['op']} x{res['clients']}{' (lease)' if res['lease'] else ''}: "
          f"{res['ops_s']:,.0f} ops/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, "
          f"errors {res['errors']}; CPU ms/op: {cpu}")
    return 0


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    sys.exit(main())
