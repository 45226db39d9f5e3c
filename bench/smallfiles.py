"""Small-file benchmark: put and get of 4 KiB files, ops/s and latency, against 3 masters and
3 chunkservers (replication 3) and, side by side, a 3-member etcd storing 4 KiB values; beside
the fsync rate (puts) and loopback round trips (gets) measured in the same run.

    ./run.sh bench smallfiles [--seconds 5] [--reps 3] [--concurrency 1,16,64]

gfs: a put is a whole upload (create, allocate a chunk, write it down the replica chain with an
fsync on each replica, commit); a get reads a file from a set of 64 written beforehand (warm:
no page-cache eviction), checksums verified. etcd: a put writes a new 4 KiB value, a get is a
linearizable read of one of 64 keys written beforehand.
"""
from __future__ import annotations

import io
import itertools
import random
import zlib

from bench import clusters
from bench.common import num, parse_ints, parse_seconds
from bench.compare import ops_done, run_both, side_by_side, side_by_side_figures
from bench.load import LoadPool, sweep
from bench.suite import Context, Option

NAME = "smallfiles"
TITLE = "4 KiB put/get — gfs (replication 3) and etcd side by side"
FILE_SIZE = 4096
READ_SET = 64
FULL = {"ops": ["put", "get"], "concurrency": [1, 16, 64], "seconds": 5.0, "warmup": 1.0,
        "reps": 3}
QUICK = {**FULL, "concurrency": [1, 16], "seconds": 1.0, "warmup": 0.3, "reps": 1}
OPTIONS = [Option("--seconds", "seconds", parse_seconds, "measured seconds per point"),
           Option("--warmup", "warmup", parse_seconds, "warm-up seconds before each point"),
           Option("--concurrency", "concurrency", parse_ints, "client threads, e.g. 1,16,64")]


def payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(FILE_SIZE)


def gfs_op(spec: dict, worker: str):
    from gfs.client import Client
    c = Client(spec["masters"], deadline=30, token=spec["token"])
    data, n = payload(spec["seed"]), itertools.count()
    if spec["op"] == "put":
        return (lambda: c.put(io.BytesIO(data), f"{spec['dir']}/{worker}-{next(n)}")), c.close

    def get() -> None:
        if c.read(f"/small/read-{next(n) % READ_SET}") != data:
            raise AssertionError("read bytes differ from what was put")
    return get, c.close


def etcd_op(spec: dict, worker: str):
    from bench.etcdkv import EtcdKV
    kv = EtcdKV(spec["endpoints"], deadline=30, start=zlib.crc32(worker.encode()))
    data, n = payload(spec["seed"]), itertools.count()
    if spec["op"] == "put":
        base = f"{spec['dir']}/{worker}-".encode()
        return (lambda: kv.put(base + b"%d" % next(n), data)), kv.close

    def get() -> None:
        if kv.get(b"/small/read-%d" % (next(n) % READ_SET)) != data:
            raise AssertionError("read bytes differ from what was put")
    return get, kv.close


def run_gfs(pool: LoadPool, cfg: dict, ctx: Context) -> dict:
    data = payload(ctx.seed)
    with clusters.gfs(ctx.work, "smallfiles-gfs", chunkservers=3) as cluster, \
            cluster.client(deadline=60) as c:
        c.mkdir("/small")
        for i in range(READ_SET):
            c.put(io.BytesIO(data), f"/small/read-{i}")

        def spec_of(op: str, conc: int, rep: int) -> dict:
            d = f"/small/{op}-c{conc}-r{rep}"
            c.mkdir(d)
            return {"masters": cluster.master_addresses(), "token": cluster.admin_token,
                    "op": op, "dir": d, "seed": ctx.seed}
        points = sweep(pool, "bench.smallfiles:gfs_op", spec_of, cfg["ops"], cfg["concurrency"],
                       cfg["reps"], cfg["seconds"], cfg["warmup"], "gfs")
        return {"points": points, "processes": clusters.gfs_processes(cluster),
                "ops_done": ops_done(points)}


def run_etcd(pool: LoadPool, cfg: dict, ctx: Context) -> dict:
    from bench.etcdkv import EtcdKV
    data = payload(ctx.seed)

    def body(cluster) -> dict:
        with EtcdKV(cluster.endpoints()) as kv:
            for i in range(READ_SET):
                kv.put(b"/small/read-%d" % i, data)
        spec_of = lambda op, conc, rep: {"endpoints": cluster.endpoints(), "op": op,
                                         "dir": f"/small/{op}-c{conc}-r{rep}", "seed": ctx.seed}
        points = sweep(pool, "bench.smallfiles:etcd_op", spec_of, cfg["ops"],
                       cfg["concurrency"], cfg["reps"], cfg["seconds"], cfg["warmup"], "etcd")
        return {"points": points, "ops_done": ops_done(points)}
    return clusters.with_etcd(ctx, "smallfiles-etcd", body)


def run(cfg: dict, ctx: Context) -> dict:
    return run_both(run_gfs, run_etcd, cfg, ctx)


def report(res: dict, refs: dict) -> str:
    cfg = res["config"]
    head = (f"{FILE_SIZE} B per file or value; {cfg['seconds']:g} s measured after "
            f"{cfg['warmup']:g} s warm-up per point, {cfg['reps']} repetition(s). Limits: fsync "
            f"rate {num(refs['fsync_ops_s']['median'])}/s for puts, loopback round trips "
            f"{num(refs['loopback_rtt_ops_s']['median'])}/s for gets. A 4 KiB gfs file is "
            f"stored inline in the metadata (--inline-max, 64 KiB): a put is one Raft command "
            f"carrying the bytes, a get one linearizable read of the masters (no chunkserver "
            f"involved); an etcd put is one Raft entry too.")
    return head + "\n\n" + side_by_side(res, refs, {"put"}, "operation (4 KiB)")


def figures(res: dict, refs: dict) -> list[dict]:
    return side_by_side_figures(res, "smallfiles", "ops/s")
