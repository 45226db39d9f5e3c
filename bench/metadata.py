"""Metadata benchmark: create, stat, list and rename against 3 real gfs masters and, side by
side, a real 3-member etcd, at several concurrencies, from the same kind of Python client
processes (bench.load); beside the disk's fsync rate and loopback round trips.

    ./run.sh bench metadata [--seconds 5] [--reps 3] [--concurrency 1,16,64] [--ops create,stat]

gfs: a create is a committed mkdir (fsync'd on a majority and applied), a stat is linearizable
(a read index: leadership confirmed by a majority, no log entry), a list reads a directory of
100 entries, a rename moves an entry. Beside them, the Python gRPC floor of a stat
(bench/grpc_floor.py): a server that answers at once, same clients.
etcd: a create is a put of a new key, a stat a linearizable get (serializable=false), a list a
range get of a 100-key prefix, a rename one txn (if the old key exists: put new, delete old).
"""
from __future__ import annotations

import itertools
import zlib

from bench import clusters, grpc_floor
from bench.common import num, parse_choices, parse_ints, parse_seconds
from bench.compare import ops_done, run_both, side_by_side, side_by_side_figures
from bench.load import LoadPool, sweep
from bench.suite import Context, Option

NAME = "metadata"
TITLE = "create, stat, list, rename — gfs (3 masters) and etcd (3 members) side by side"
OPS = ["create", "stat", "list", "rename"]
WRITES = {"create", "rename"}
LIST_ENTRIES = 100
VALUE = bytes(range(128))        # an etcd value about the size of a gfs inode record
FULL = {"ops": OPS, "concurrency": [1, 16, 64], "seconds": 5.0, "warmup": 1.0, "reps": 3}
QUICK = {**FULL, "seconds": 1.0, "warmup": 0.3, "reps": 1}


def parse_ops(text: str) -> list[str]:
    return parse_choices(text, OPS, "metadata operation")


OPTIONS = [Option("--seconds", "seconds", parse_seconds, "measured seconds per point"),
           Option("--warmup", "warmup", parse_seconds, "warm-up seconds before each point"),
           Option("--concurrency", "concurrency", parse_ints, "client threads, e.g. 1,16,64"),
           Option("--ops", "ops", parse_ops, "operations, e.g. create,stat,list,rename")]


# --- one operation per thread (run inside the load processes) ------------------------------

def gfs_op(spec: dict, worker: str):
    from gfs.client import Client
    c = Client(spec["masters"], deadline=30, token=spec["token"], tls_ca=spec.get("tls_ca"))
    op, base = spec["op"], spec["dir"]
    if op == "create":
        n = itertools.count()
        return (lambda: c.mkdir(f"{base}/{worker}-{next(n)}")), c.close
    if op == "stat":
        return (lambda: c.stat(spec["target"])), c.close
    if op == "list":
        def listing() -> None:
            if sum(1 for _ in c.list(spec["listdir"])) != LIST_ENTRIES:
                raise AssertionError("list returned the wrong number of entries")
        return listing, c.close
    n = itertools.count()
    c.mkdir(f"{base}/{worker}-0")

    def rename() -> None:
        i = next(n)
        c.rename(f"{base}/{worker}-{i}", f"{base}/{worker}-{i + 1}")
    return rename, c.close


def etcd_op(spec: dict, worker: str):
    from bench.etcdkv import EtcdKV
    kv = EtcdKV(spec["endpoints"], deadline=30, start=zlib.crc32(worker.encode()))
    op, base = spec["op"], spec["dir"].encode()
    key = lambda i: b"%s/%s-%d" % (base, worker.encode(), i)
    if op == "create":
        n = itertools.count()
        return (lambda: kv.put(key(next(n)), VALUE)), kv.close
    if op == "stat":
        def get() -> None:
            if kv.get(spec["target"].encode()) is None:
                raise AssertionError("stat target missing")
        return get, kv.close
    if op == "list":
        def listing() -> None:
            if len(kv.list(spec["listdir"].encode() + b"/")) != LIST_ENTRIES:
                raise AssertionError("list returned the wrong number of keys")
        return listing, kv.close
    n = itertools.count()
    kv.put(key(0), VALUE)

    def rename() -> None:
        i = next(n)
        if not kv.rename(key(i), key(i + 1), VALUE):
            raise AssertionError("rename source missing")
    return rename, kv.close


# --- the benchmark --------------------------------------------------------------------------

def _measure(pool: LoadPool, cfg: dict, factory: str, base: dict, mkdir, label: str) -> list:
    def spec_of(op: str, conc: int, rep: int) -> dict:
        d = f"/bench/{op}-c{conc}-r{rep}"
        mkdir(d)
        return {**base, **gfs_spec(op, d)}
    return sweep(pool, factory, spec_of, cfg["ops"], cfg["concurrency"], cfg["reps"],
                 cfg["seconds"], cfg["warmup"], label)


def prepare_gfs(c) -> None:
    """The directories the operations work on: /bench, the stat target, a list of 100."""
    for d in ("/bench", "/bench/stat-target", "/bench/list"):
        c.mkdir(d)
    for i in range(LIST_ENTRIES):
        c.mkdir(f"/bench/list/entry-{i:03d}")


def gfs_spec(op: str, directory: str) -> dict:
    """What `gfs_op` needs besides the cluster's addresses and token."""
    return {"op": op, "dir": directory, "target": "/bench/stat-target", "listdir": "/bench/list"}


def run_gfs(pool: LoadPool, cfg: dict, ctx: Context) -> dict:
    with clusters.gfs(ctx.work, "metadata-gfs") as cluster, \
            cluster.client(deadline=60) as c:
        prepare_gfs(c)
        points = _measure(pool, cfg, "bench.metadata:gfs_op",
                          {"masters": cluster.master_addresses(), "token": cluster.admin_token},
                          c.mkdir, "gfs")
        return {"points": points, "processes": clusters.gfs_processes(cluster),
                "ops_done": ops_done(points)}


def run_etcd(pool: LoadPool, cfg: dict, ctx: Context) -> dict:
    from bench.etcdkv import EtcdKV

    def body(cluster) -> dict:
        with EtcdKV(cluster.endpoints()) as kv:
            kv.put(b"/bench/stat-target", VALUE)
            for i in range(LIST_ENTRIES):
                kv.put(b"/bench/list/entry-%03d" % i, VALUE)
            points = _measure(pool, cfg, "bench.metadata:etcd_op",
                              {"endpoints": cluster.endpoints()}, lambda d: None, "etcd")
            return {"points": points, "ops_done": ops_done(points)}
    return clusters.with_etcd(ctx, "metadata-etcd", body)


def run(cfg: dict, ctx: Context) -> dict:
    also = {"grpc_floor": grpc_floor.run} if "stat" in cfg["ops"] else None
    return run_both(run_gfs, run_etcd, cfg, ctx, also)


# --- report ---------------------------------------------------------------------------------

def report(res: dict, refs: dict) -> str:
    cfg = res["config"]
    head = (f"{cfg['seconds']:g} s measured after {cfg['warmup']:g} s warm-up per point, "
            f"{cfg['reps']} repetition(s), median and min–max; clients spread over up to 4 "
            f"Python processes. Limits: fsync rate {num(refs['fsync_ops_s']['median'])}/s for "
            f"writes (create, rename), loopback round trips "
            f"{num(refs['loopback_rtt_ops_s']['median'])}/s for reads (stat, list).")
    floor = grpc_floor.report(res)
    return (head + "\n\n" + side_by_side(res, refs, WRITES, "operation")
            + ("\n\n" + floor if floor else ""))


def figures(res: dict, refs: dict) -> list[dict]:
    return side_by_side_figures(res, "metadata", "ops/s")


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as bench_main
    return bench_main([NAME, *(argv or [])])


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    import sys
    sys.exit(main(sys.argv[1:]))
