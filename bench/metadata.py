"""Metadata benchmark: committed creates/s and linearizable stats/s against 3 real masters at
several concurrencies, beside the disk's fsync ceiling measured in the same run.

    ./run.sh bench metadata [--seconds 5] [--reps 3] [--concurrency 1,64]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time

from bench.common import fsync_ceiling, median, percentile, save_results, table

PROCS_FOR_CONCURRENCY = 4   # client load comes from several processes, not one GIL


def _worker(masters, op, threads, seconds, prefix, out):
    from gfs.client import Client
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start_at = time.monotonic() + 0.2
    stop_at = start_at + seconds

    def run(tid):
        mine = []
        with Client(masters, deadline=30) as c:
            n = 0
            while time.monotonic() < start_at:
                time.sleep(0.001)
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                try:
                    if op == "create":
                        c.mkdir(f"{prefix}-{tid}-{n}")
                    else:
                        c.stat("/bench-stat-target")
                except Exception:
                    with lock:
                        errors[0] += 1
                    continue
                mine.append(time.perf_counter() - t)
                n += 1
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, errors[0]))


def measure(masters, op, concurrency, seconds, tag) -> dict:
    ctx = mp.get_context("spawn")
    procs = 1 if concurrency < PROCS_FOR_CONCURRENCY else PROCS_FOR_CONCURRENCY
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    q = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(masters, op, n, seconds, f"/bench/{tag}-p{i}", q))
          for i, n in enumerate(per)]
    for p in ps:
        p.start()
    lat, errors = [], 0
    for _ in ps:
        part, err = q.get()
        lat += part
        errors += err
    for p in ps:
        p.join()
    return {"ops_s": len(lat) / seconds, "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3, "errors": errors}


def run(seconds: float, reps: int, concurrencies: list[int], data_dir: str | None) -> dict:
    from cli.localcluster import LocalCluster
    from gfs.client import Client
    base = data_dir or tempfile.mkdtemp(prefix="gfs-bench-meta-")
    fs = fsync_ceiling(base)
    cluster = LocalCluster(os.path.join(base, f"cluster-{int(time.time())}"))
    cluster.create(masters=3)
    cluster.up()
    results = []
    try:
        with Client(cluster.master_addresses()) as c:
            c.mkdir("/bench")
            c.mkdir("/bench-stat-target")
        for op in ("create", "stat"):
            for conc in concurrencies:
                runs = [measure(cluster.master_addresses(), op, conc, seconds, f"{op}{conc}r{r}")
                        for r in range(reps)]
                results.append({"op": op, "concurrency": conc,
                                "ops_s": median([r["ops_s"] for r in runs]),
                                "ops_s_min": min(r["ops_s"] for r in runs),
                                "ops_s_max": max(r["ops_s"] for r in runs),
                                "p50_ms": median([r["p50_ms"] for r in runs]),
                                "p99_ms": median([r["p99_ms"] for r in runs]),
                                "errors": sum(r["errors"] for r in runs)})
                print(f"  {op} c={conc}: {results[-1]['ops_s']:.0f} ops/s", flush=True)
    finally:
        cluster.down()
    return {"fsync": fs, "results": results, "seconds": seconds, "reps": reps}


def report(res: dict) -> str:
    fs = res["fsync"]
    rows = [[r["op"], r["concurrency"], f"{r['ops_s']:.0f}",
             f"{r['ops_s_min']:.0f}–{r['ops_s_max']:.0f}", f"{r['p50_ms']:.2f}",
             f"{r['p99_ms']:.2f}", f"{r['ops_s'] / fs['ops_s']:.2f}", r["errors"]]
            for r in res["results"]]
    rows.append(["fsync ceiling (write+fdatasync)", 1, f"{fs['ops_s']:.0f}", "", f"{fs['p50_ms']:.3f}",
                 f"{fs['p99_ms']:.3f}", "1.00", ""])
    return table(["operation (3 masters)", "clients", "ops/s (median)", "range", "p50 ms",
                  "p99 ms", "× fsync rate", "errors"], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench metadata", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", default="1,64")
    ap.add_argument("--data", help="directory on the disk to measure (default: a temp dir)")
    a = ap.parse_args(argv)
    res = run(a.seconds, a.reps, [int(x) for x in a.concurrency.split(",")], a.data)
    print(report(res))
    print(f"results: {save_results('metadata', res)}")


if __name__ == "__main__":
    main()
