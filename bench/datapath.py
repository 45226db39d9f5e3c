"""Data-path benchmark: put/get throughput of real client processes against 3 masters and
3 chunkservers, for several file sizes, client counts and replication factors, beside the
machine's raw disk and loopback TCP rates measured in the same run.

    ./run.sh bench datapath [--size 1MiB,64MiB,1GiB] [--reps 3] [--clients 1,4]
                            [--replication 1,3]

Each client process puts (or gets) its own files of --size (small sizes: several files one
after another, so that a measurement moves at least 64 MiB per client); MB/s is aggregate
(all clients' bytes / wall time), 1 MB = 10^6 bytes; beside it, the CPU seconds per GiB moved
of the clients and the chunkservers during the measurement, and the chunkservers' peak RSS.
Before every get the chunk files are evicted from the page cache, so gets read the disk like the
raw cold read does; every get is checked against the source's hash.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import time
from collections.abc import Callable

import xxhash

from bench import clusters
from bench.common import (
    MB,
    PIECE,
    num,
    parse_ints,
    parse_sizes,
    process_stats,
    ratio,
    rng,
    spread,
    table,
)
from bench.refs import evict, loopback_tcp, raw_disk
from bench.suite import Context, Option

__all__ = ["MB", "PIECE", "evict", "loopback_tcp", "process_stats", "raw_disk", "report", "run"]

NAME = "datapath"
TITLE = "put/get of large files (3 masters, 3 chunkservers)"
FULL = {"sizes": [1 << 20, 64 << 20, 1 << 30], "clients": [1, 4], "replication": [1, 3],
        "reps": 3, "min_bytes": 64 << 20}
QUICK = {**FULL, "sizes": [1 << 20, 16 << 20], "reps": 1, "min_bytes": 8 << 20}
OPTIONS = [Option("--size", "sizes", parse_sizes, "file sizes, e.g. 1MiB,64MiB,1GiB"),
           Option("--clients", "clients", parse_ints, "client processes, e.g. 1,4"),
           Option("--replication", "replication", parse_ints, "replication factors, e.g. 1,3")]


# --- files ---------------------------------------------------------------------------------

def file_hash(path: str) -> int:
    h = xxhash.xxh3_64()
    buf = bytearray(PIECE)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.intdigest()


def random_bytes(rand: random.Random, n: int) -> bytes:
    return rand.randbytes(n)


def make_source(directory: str, size: int, seed: int = 7,
                generate: Callable[[random.Random, int], bytes] = random_bytes,
                name: str = "source") -> tuple[str, int]:
    """A file of `size` seeded bytes written piece by piece (`generate(rand, n)` makes each
    piece of n bytes; default random, i.e. incompressible); returns (path, xxh3_64)."""
    path = os.path.join(directory, f"{name}-{size}.bin")
    h = xxhash.xxh3_64()
    rand = random.Random(seed * 1_000_003 + size)
    with open(path, "wb", buffering=0) as f:
        for pos in range(0, size, PIECE):
            piece = generate(rand, min(PIECE, size - pos))
            h.update(piece)
            f.write(piece)
    return path, h.intdigest()


# --- client processes ----------------------------------------------------------------------

def _client(masters, op, remotes, local, digest, replication, barrier, out):
    import resource

    from gfs.client import Client
    from gfs.memory import reuse_large_buffers
    reuse_large_buffers()                     # as `gfs get/put` do (cli/main.py)
    error, got = "", []
    with Client(masters, deadline=60) as c:
        c.stat("/bench")                      # connect and find the leader before the clock
        barrier.wait()
        before = resource.getrusage(resource.RUSAGE_SELF)   # (start-up and imports before it)
        try:
            for i, remote in enumerate(remotes):
                if op == "put":
                    c.put(local, remote, replication=replication)
                elif op == "get-null":        # the read path alone (as rados bench reads)
                    c.get(remote, os.devnull)
                else:                         # each to its own file, checked after the clock
                    got.append(f"{local}.{i}")
                    c.get(remote, got[-1])
        except Exception as err:              # counted, and the first one is printed
            error = f"{type(err).__name__}: {err}"
        end = time.monotonic()
    ru = resource.getrusage(resource.RUSAGE_SELF)     # the transfer's CPU, not the check's
    cpu = ru.ru_utime + ru.ru_stime - before.ru_utime - before.ru_stime
    for path in got:
        if not error and os.path.exists(path) and file_hash(path) != digest:
            error = "AssertionError: downloaded bytes differ from the source"
        if os.path.exists(path):
            os.unlink(path)
    out.put((end, error, ru.ru_maxrss * 1024, cpu))


def measure(masters: list[str], op: str, remotes: list[list[str]], source: str, digest: int,
            replication: int, size: int, work: str) -> dict:
    """One put or get by len(remotes) client processes at once, each of its own list of files:
    aggregate MB/s of the clients that succeeded, errors, the clients' peak RSS and CPU.
    `op`: "put", "get-null" (to /dev/null: every block still verified by the client) or
    "get" (to a file of the client's on the same disk, hash-checked after)."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(len(remotes) + 1), ctx.Queue()
    locals_ = [source if op == "put" else os.path.join(work, f"get-{i}.bin")
               for i in range(len(remotes))]
    ps = [ctx.Process(target=_client, args=(masters, op, r, l, digest, replication, barrier, q),
                      daemon=True) for r, l in zip(remotes, locals_)]
    for p in ps:
        p.start()
    barrier.wait(timeout=120)                 # broken if a client dies while starting
    start = time.monotonic()
    done = []
    while len(done) < len(ps):
        try:
            done.append(q.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode for p in ps):
                raise RuntimeError(f"a {op} client process died") from None
    for p in ps:
        p.join()
    errors = [e for _, e, _, _ in done if e]
    if errors:
        print(f"    {op}: {len(errors)} error(s), first: {errors[0]}", flush=True)
    wall = max(end for end, _, _, _ in done) - start
    per_client = len(remotes[0]) * size
    return {"mb_s": (len(remotes) - len(errors)) * per_client / wall / MB,
            "errors": len(errors), "first_error": errors[0] if errors else "",
            "bytes": (len(remotes) - len(errors)) * per_client,
            "client_rss": max(rss for _, _, rss, _ in done),
            "client_cpu_s": sum(cpu for _, _, _, cpu in done)}


def reclaim(cluster, client, path: str) -> None:
    """Delete a remote file for good and its chunk replicas at once (garbage collection would
    wait for its grace period, an hour by default, and the disk would fill up meanwhile); the
    deletes are signed with the local cluster's secret, as the leader's would be."""
    from gfs.auth.daemon import DaemonAuth
    from gfs.transfer import Channels
    from proto import chunkserver_pb2 as cpb
    info = client.stat(path)
    client.delete(path, skip_trash=True)
    channels = Channels(DaemonAuth(cluster.cluster_secret()),
                        cluster.tls.ca_pem() if cluster.tls else None)
    try:
        for chunk in info.chunks:
            for address in chunk.replicas:
                channels.stub(address).DeleteChunk(
                    cpb.DeleteRequest(handle=chunk.handle, version=chunk.version), timeout=10)
    finally:
        channels.close()


def evict_chunks(cluster) -> None:
    """Drop every chunkserver's chunk files (both tiers: the cold tier is DATA/cold in a local
    cluster) from the page cache, so the next read comes from the disk."""
    for cs in cluster.spec["chunkservers"]:
        evict(cs["data"])


def raft_term(cluster) -> int:
    statuses = [cluster.master_status(m) for m in cluster.spec["masters"]]
    return max(st["term"] if st else 0 for st in statuses)


# --- the benchmark -------------------------------------------------------------------------

def chunkserver_cpu(cluster) -> dict[str, float]:
    """CPU seconds so far of each running chunkserver."""
    return {d["name"]: process_stats(cluster.pid(d["name"]))["cpu_s"] or 0.0
            for d in cluster.spec["chunkservers"]}


def measured_with_cpu(cluster, *args) -> dict:
    """`measure(*args)` plus the CPU seconds each chunkserver spent during it (`cs_cpu_s`, by
    name) and the chunkservers' peak RSS so far (`cs_peak_rss`, the highest)."""
    before = chunkserver_cpu(cluster)
    result = measure(*args)
    after = chunkserver_cpu(cluster)
    result["cs_cpu_s"] = {name: after[name] - before.get(name, 0.0) for name in after}
    result["cs_peak_rss"] = max((process_stats(cluster.pid(d["name"]))["peak_rss"] or 0)
                                for d in cluster.spec["chunkservers"])
    return result


GETS = ("get-null", "get")
OPS = {"put": "put", "get-null": "get to /dev/null", "get": "get to a file"}   # as reported


def put_then_get(cluster, client, remotes: list[list[str]], replication: int, source: str,
                 digest: int, size: int, work: str) -> dict[str, list[dict]]:
    """For each kind of get: put the source to every remote at once, get them all back cold
    that way, then delete them. Each get reads files of its own, so each is a first read (a
    chunkserver caches a region read twice within minutes: chunkserver/direct_reads.py).
    Measurements by op: two puts, one of each get."""
    masters = cluster.master_addresses()
    done: dict[str, list[dict]] = {"put": []}
    for op in GETS:
        done["put"].append(measured_with_cpu(cluster, masters, "put", remotes, source, digest,
                                             replication, size, work))
        evict_chunks(cluster)
        done[op] = [measured_with_cpu(cluster, masters, op, remotes, source, digest,
                                      replication, size, work)]
        for r in (r for rs in remotes for r in rs):
            if client.exists(r):
                reclaim(cluster, client, r)
    return done


def run(cfg: dict, ctx: Context) -> dict:
    results = []
    moved = 0
    client_stats = {f"clients ({op})": {"peak_rss": 0, "cpu_s": 0.0} for op in ("put", *GETS)}
    with clusters.gfs(ctx.work, "datapath-gfs", chunkservers=3) as cluster, \
            cluster.client() as c:
        terms = [raft_term(cluster)]
        c.mkdir("/bench")
        for size in cfg["sizes"]:
            size = max(PIECE, size - size % PIECE)          # whole 1 MiB pieces
            count = max(1, cfg["min_bytes"] // size)
            source, digest = make_source(ctx.work, size, ctx.seed)
            warm = put_then_get(cluster, c, [[f"/bench/warmup-{size}"]], 1, source, digest,
                                size, ctx.work)             # connections, caches: not counted
            moved += sum(w["bytes"] for ws in warm.values() for w in ws)
            for repl in cfg["replication"]:
                for n in cfg["clients"]:
                    runs = [put_then_get(cluster, c, [[f"/bench/s{size}-r{repl}-c{n}-{rep}-{i}-{k}"
                                                       for k in range(count)] for i in range(n)],
                                         repl, source, digest, size, ctx.work)
                            for rep in range(cfg["reps"])]
                    for op in ("put", *GETS):
                        rs = [m for r in runs for m in r[op]]
                        moved += sum(r["bytes"] for r in rs)
                        gib = [r["bytes"] / (1 << 30) or 1.0 for r in rs]
                        results.append({"op": op, "size": size, "replication": repl,
                                        "clients": n, "files_per_client": count,
                                        "mb_s": spread([r["mb_s"] for r in rs]),
                                        "client_cpu_s_per_gib": _median(
                                            [r["client_cpu_s"] / g for r, g in zip(rs, gib)]),
                                        "chunkserver_cpu_s_per_gib": _median(
                                            [max(r["cs_cpu_s"].values()) / g
                                             for r, g in zip(rs, gib)]),
                                        "chunkservers_cpu_s_per_gib": _median(
                                            [sum(r["cs_cpu_s"].values()) / g
                                             for r, g in zip(rs, gib)]),
                                        "chunkserver_peak_rss": max(r["cs_peak_rss"] for r in rs),
                                        "errors": sum(r["errors"] for r in rs),
                                        "first_error": next((r["first_error"] for r in rs
                                                             if r["first_error"]), "")})
                        print(f"  {op} {size >> 20} MiB r={repl} c={n}: "
                              f"{results[-1]['mb_s']['median']:.0f} MB/s", flush=True)
                        seen = client_stats[f"clients ({op})"]
                        seen["peak_rss"] = max([seen["peak_rss"]] + [r["client_rss"] for r in rs])
                        seen["cpu_s"] += sum(r["client_cpu_s"] for r in rs)
            os.unlink(source)
        procs = clusters.gfs_processes(cluster)
        procs.update(client_stats)
        terms.append(raft_term(cluster))
    return {"results": results, "processes": procs, "bytes_moved": moved, "raft_terms": terms}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[len(xs) // 2] + xs[(len(xs) - 1) // 2]) / 2


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _cpu(r: dict, key: str) -> str:
    return num(r[key], 2) if key in r else "–"      # (results of older runs lack it)


def report(res: dict, refs: dict) -> str:
    ref = {"put": ("disk_write_mb_s", "raw write"),
           "get-null": ("disk_cold_read_mb_s", "raw cold read"),
           "get": ("disk_copy_mb_s", "raw copy") if "disk_copy_mb_s" in refs     # (older runs:
           else ("disk_cold_read_mb_s", "raw cold read")}                         # to a file)
    tcp = refs["loopback_tcp_mb_s"]["median"]
    rows = [[f"{OPS[r['op']]} (replication {r['replication']})", _size(r["size"]), r["clients"],
             num(r["mb_s"]["median"]), rng(r["mb_s"]),
             f"{ratio(r['mb_s']['median'], refs[ref[r['op']][0]]['median'])} × {ref[r['op']][1]}",
             ratio(r["mb_s"]["median"], tcp), _cpu(r, "client_cpu_s_per_gib"),
             _cpu(r, "chunkserver_cpu_s_per_gib"), _cpu(r, "chunkservers_cpu_s_per_gib"),
             num(r["chunkserver_peak_rss"] / (1 << 20)) if r.get("chunkserver_peak_rss") else "–",
             r["errors"]]
            for r in res["results"]]
    first, last = res["raft_terms"]
    errs = [r["first_error"] for r in res["results"] if r["first_error"]]
    return (table(["operation (3 masters, 3 chunkservers)", "file", "clients", "MB/s (median)",
                   "range", "× disk", "× loopback TCP", "client CPU s/GiB",
                   "busiest chunkserver CPU s/GiB", "all chunkservers CPU s/GiB",
                   "chunkserver peak RSS MiB", "errors"], rows)
            + f"\n\nReferences: raw write {num(refs['disk_write_mb_s']['median'])} MB/s, raw cold "
              f"read {num(refs['disk_cold_read_mb_s']['median'])} MB/s"
            + (f", raw copy (cold read + write + fdatasync) "
               f"{num(refs['disk_copy_mb_s']['median'])} MB/s" if "disk_copy_mb_s" in refs else "")
            + f", loopback TCP {num(tcp)} MB/s. Raft term {first} → {last} during the run; MB/s "
              f"counts only clients that succeeded; gets are cold (page cache evicted); a get to "
              f"/dev/null measures the read path (the client verifies every block), a get to a "
              f"file writes a file of its own on the same disk (hash-checked after the clock). "
              f"CPU s/GiB: CPU seconds spent during the measurement (median over repetitions) "
              f"per GiB the clients moved (the machine's reference: ~0.26 for one process "
              f"writing to disk, ~0.41 for sending + receiving on loopback); peak RSS: the "
              f"highest of the chunkservers so far (VmHWM)."
            + (f" First error: {errs[0]}" if errs else ""))


def figures(res: dict, refs: dict) -> list[dict]:
    panels: dict[str, dict] = {}
    for r in res["results"]:
        series = panels.setdefault(f"{_size(r['size'])} files", {}).setdefault(
            f"{OPS[r['op']]} r={r['replication']}", [])
        series.append((r["clients"], r["mb_s"]["median"], r["mb_s"]["min"], r["mb_s"]["max"]))
    return [{"kind": "throughput", "name": "datapath-throughput", "ylabel": "MB/s",
             "title": "data path: aggregate MB/s vs client processes", "panels": panels}]


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as bench_main
    return bench_main([NAME, *(argv or [])])


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    import sys
    sys.exit(main(sys.argv[1:]))
