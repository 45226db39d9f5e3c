"""What authentication costs: metadata ops/s and put/get MB/s of three clusters on the same
machine, in one run — auth + TLS (bearer tokens, daemon signatures, chunk capabilities, gRPC
over TLS: the default of a real deployment), auth without TLS (the default of `gfs cluster up`),
and `--insecure-no-auth` without TLS (the baseline: nothing authenticated) — each quoted as a
ratio to the baseline beside issue 12's targets (at most 10 % cost on metadata, 5 % on the
data path).

    ./run.sh bench auth_cost [--quick] [--reps 5] [--seconds 3] [--concurrency 1,16]
                             [--ops create,stat,list] [--size 256MiB]

The three clusters (3 masters, 3 chunkservers each) run side by side, idle but for the one
being measured, and every measurement is interleaved: each repetition of a point measures all
three, the order rotated from one repetition to the next (A/B/C, B/C/A, C/A/B, ...), so load
from elsewhere on a shared machine falls on all three alike; medians are quoted.

Metadata: the operations of bench/metadata.py (create = committed mkdir, stat = linearizable,
list = a directory of 100 entries) from the same pool of client processes, every client
sending the administrator's token (ignored by the insecure cluster), so what differs is the
servers' side only. Data path: bench/datapath.py's put and get of one file of --size by one
client process, replication 3 (the chain of three chunkservers), the get warm (right after
the put, page cache not evicted: the CPU-bound case, where authentication and TLS weigh most)
and hash-checked.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator

from bench import clusters, tls_probe
from bench.common import (GiB, median, num, parse_ints, parse_seconds, parse_size,
                          process_stats, ratio, rng, spread, table)
from bench.datapath import make_source, measure, reclaim
from bench.load import LoadPool, summarize
from bench.metadata import OPS as METADATA_OPS
from bench.metadata import parse_ops, gfs_spec, prepare_gfs
from bench.suite import Context, Option
from gfs.config import ENV_TLS_CA, ENV_TOKEN

NAME = "auth_cost"
TITLE = "what auth costs: auth + TLS, auth, and --insecure-no-auth side by side"
BASELINE = "insecure"
CONFIGS = {"auth+tls": {"tls": True, "insecure_no_auth": False},
           "auth": {"tls": False, "insecure_no_auth": False},
           BASELINE: {"tls": False, "insecure_no_auth": True}}
TARGET_COST = {"metadata": 0.10, "data": 0.05}      # issue 12: at most this fraction slower
FULL = {"ops": ["create", "stat", "list"], "concurrency": [1, 16], "seconds": 3.0,
        "warmup": 0.5, "reps": 5, "size": 256 << 20, "replication": 3}
QUICK = {**FULL, "concurrency": [1, 8], "seconds": 1.0, "warmup": 0.3, "reps": 2,
         "size": 64 << 20}
OPTIONS = [Option("--seconds", "seconds", parse_seconds, "measured seconds per point"),
           Option("--warmup", "warmup", parse_seconds, "warm-up seconds before each point"),
           Option("--concurrency", "concurrency", parse_ints, "client threads, e.g. 1,16,64"),
           Option("--ops", "ops", parse_ops, "operations, e.g. " + ",".join(METADATA_OPS)),
           Option("--size", "size", parse_size, "file size of the put/get, e.g. 256MiB")]


def order(rep: int) -> list[str]:
    """The configurations in the order repetition `rep` measures them (rotated each time)."""
    names = list(CONFIGS)
    k = rep % len(names)
    return names[k:] + names[:k]


@contextmanager
def acting_for(cluster) -> Iterator[None]:
    """Client processes started within act on `cluster`: its admin token and its CA."""
    keys = (ENV_TOKEN, ENV_TLS_CA)
    before = {k: os.environ.get(k) for k in keys}
    os.environ[ENV_TOKEN] = cluster.admin_token
    os.environ.pop(ENV_TLS_CA, None)
    if cluster.tls:
        os.environ[ENV_TLS_CA] = cluster.tls.ca
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def daemon_cpu_s(cluster) -> float:
    """CPU seconds the cluster's daemons have used so far (all of them together)."""
    return sum(process_stats(cluster.pid(d["name"]))["cpu_s"] or 0.0 for d in cluster.daemons())


IDLE_S = 3.0


def idle_rates(started: dict, seconds: float = IDLE_S) -> dict[str, float]:
    """CPU seconds per second each cluster's daemons use doing nothing (Raft and chunkserver
    heartbeats), measured on all of them at once: subtracted from what a measurement used."""
    before = {name: daemon_cpu_s(cluster) for name, (cluster, _) in started.items()}
    t = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t
    return {name: max(0.0, (daemon_cpu_s(cluster) - before[name]) / wall)
            for name, (cluster, _) in started.items()}


@contextmanager
def work_cpu(cluster, idle_rate: float) -> Iterator[dict]:
    """{"cpu_s"}: the daemons' CPU seconds spent inside the block beyond their idle rate."""
    out: dict = {}
    cpu, t = daemon_cpu_s(cluster), time.monotonic()
    yield out
    out["cpu_s"] = max(0.0, daemon_cpu_s(cluster) - cpu - idle_rate * (time.monotonic() - t))


def measure_metadata(pool: LoadPool, cfg: dict, started: dict, idle: dict) -> list[dict]:
    """Every (op, clients) point, its repetitions interleaved over the configurations."""
    points = []
    for op in cfg["ops"]:
        for conc in cfg["concurrency"]:
            runs: dict[str, list[dict]] = {n: [] for n in CONFIGS}
            for rep in range(cfg["reps"]):
                for name in order(rep):
                    cluster, client = started[name]
                    d = f"/bench/{op}-c{conc}-r{rep}"
                    client.mkdir(d)
                    spec = {"masters": cluster.master_addresses(), "token": cluster.admin_token,
                            "tls_ca": cluster.tls.ca if cluster.tls else None,
                            **gfs_spec(op, d)}
                    with work_cpu(cluster, idle[name]) as used:
                        r = pool.measure("bench.metadata:gfs_op", spec, conc, cfg["seconds"],
                                         cfg["warmup"], f"{name}-{op}{conc}r{rep}")
                    # Daemon CPU over warm-up and window, per operation at the window's rate.
                    done = r["ops_s"] * (cfg["seconds"] + cfg["warmup"])
                    r["cpu_ms_per_op"] = used["cpu_s"] * 1e3 / done if done else float("nan")
                    runs[name].append(r)
            point = {"op": op, "concurrency": conc,
                     "configs": {n: {**summarize(op, conc, rs),
                                     "cpu_ms_per_op": median([r["cpu_ms_per_op"] for r in rs])}
                                 for n, rs in runs.items()}}
            points.append(point)
            print(f"  {op} c={conc}: " + ", ".join(
                f"{n} {p['ops_s']['median']:.0f} ops/s" for n, p in point["configs"].items()),
                flush=True)
    return points


def put_get(cluster, idle_rate: float, client, remote: str, cfg: dict, source: str,
            digest: int, work: str) -> dict[str, dict]:
    """One put of the source and one warm get of it (each with the CPU seconds per GiB of the
    cluster's daemons, beyond their idle rate, and of the client), then the file is deleted."""
    out = {}
    for op in ("put", "get"):
        with work_cpu(cluster, idle_rate) as used:
            r = measure(cluster.master_addresses(), op, [[remote]], source, digest,
                        cfg["replication"], cfg["size"], work)
        cpu = used["cpu_s"] + r["client_cpu_s"]
        r["cpu_s_per_gib"] = cpu * GiB / r["bytes"] if r["bytes"] else float("nan")
        out[op] = r
    reclaim(cluster, client, remote)
    return out


def measure_data(cfg: dict, started: dict, idle: dict, work: str, seed: int) -> list[dict]:
    """Put and get of one file per configuration per repetition, interleaved."""
    size = cfg["size"]
    source, digest = make_source(work, size, seed)
    runs: dict[str, list[dict]] = {n: [] for n in CONFIGS}
    try:
        for rep in range(-1, cfg["reps"]):             # rep -1: warm-up, not counted
            for name in order(max(rep, 0)):
                cluster, client = started[name]
                with acting_for(cluster):
                    r = put_get(cluster, idle[name], client, f"/bench/data-{rep + 1}", cfg,
                                source, digest, work)
                if rep >= 0:
                    runs[name].append(r)
    finally:
        os.unlink(source)
    out = []
    for op in ("put", "get"):
        configs = {}
        for name, rs in runs.items():
            got = [r[op] for r in rs]
            configs[name] = {"mb_s": spread([g["mb_s"] for g in got]),
                             "cpu_s_per_gib": median([g["cpu_s_per_gib"] for g in got]),
                             "errors": sum(g["errors"] for g in got),
                             "first_error": next((g["first_error"] for g in got
                                                  if g["first_error"]), ""),
                             "runs": [g["mb_s"] for g in got]}
        out.append({"op": op, "size": size, "replication": cfg["replication"],
                    "configs": configs})
        print(f"  {op} {size >> 20} MiB r={cfg['replication']}: " + ", ".join(
            f"{n} {c['mb_s']['median']:.0f} MB/s" for n, c in configs.items()), flush=True)
    return out


def run(cfg: dict, ctx: Context) -> dict:
    probe = tls_probe.measure(ctx.work, cfg["size"], max(2, min(cfg["reps"], 3)))
    print(f"  one gRPC stream: plaintext {probe['plain']['mb_s']['median']:.0f} MB/s, "
          f"TLS {probe['tls']['mb_s']['median']:.0f} MB/s", flush=True)
    with ExitStack() as stack:
        started = {}
        for name, mode in CONFIGS.items():
            cluster = stack.enter_context(clusters.gfs(
                ctx.work, f"auth-cost-{name.replace('+', '-')}", chunkservers=3, **mode))
            client = stack.enter_context(cluster.client(deadline=60))
            prepare_gfs(client)
            started[name] = (cluster, client)
        idle = idle_rates(started)
        print("  idle daemon CPU: " + ", ".join(f"{n} {v:.2f} s/s" for n, v in idle.items()),
              flush=True)
        with LoadPool() as pool:
            metadata = measure_metadata(pool, cfg, started, idle)
        data = measure_data(cfg, started, idle, ctx.work, ctx.seed)
        processes = {f"{name}: {d['name']}": process_stats(cluster.pid(d["name"]))
                     for name, (cluster, _) in started.items() for d in cluster.daemons()}
    cpu = {name: sum(st["cpu_s"] or 0 for key, st in processes.items()
                     if key.startswith(f"{name}: ")) for name in CONFIGS}
    return {"metadata": metadata, "data": data, "processes": processes, "daemon_cpu_s": cpu,
            "idle_cpu_s_per_s": idle, "tls_probe": probe}


# --- report --------------------------------------------------------------------------------

def _cell(value: float, base: float, target: float) -> tuple[str, str]:
    """(ratio to the baseline, whether the cost is within the target)."""
    r = ratio(value, base)
    if r == "–":
        return r, "–"
    return r, "yes" if value / base >= 1 - target else "**no**"


def rows_of(res: dict) -> list[list]:
    """One row per measured point and configuration: figure, range, ratio, target met, and the
    daemons' CPU per unit of work beside the baseline's."""
    rows = []
    for kind, key, unit, cpu_key, cpu_unit, points in (
            ("metadata", "ops_s", "ops/s", "cpu_ms_per_op", "ms/op", res["metadata"]),
            ("data", "mb_s", "MB/s", "cpu_s_per_gib", "s/GiB", res["data"])):
        target = TARGET_COST[kind]
        for p in points:
            base = p["configs"][BASELINE]
            what = (f"{p['op']}, {p['concurrency']} clients" if kind == "metadata" else
                    f"{p['op']} {p['size'] >> 20} MiB, r={p['replication']}")
            for name, c in p["configs"].items():
                r, ok = _cell(c[key]["median"], base[key]["median"], target)
                rows.append([what, name, f"{num(c[key]['median'])} {unit}", rng(c[key]), r,
                             "baseline" if name == BASELINE else f"≥ {1 - target:.2f}",
                             "" if name == BASELINE else ok,
                             f"{num(c[cpu_key], 2)} {cpu_unit}",
                             ratio(c[cpu_key], base[cpu_key]), c["errors"]])
    return rows


def report(res: dict, refs: dict) -> str:
    cpu = res["daemon_cpu_s"]
    base_cpu = cpu.get(BASELINE) or 0
    idle_line = ", ".join(f"{n} {num(v, 2)} CPU s/s"
                          for n, v in res.get("idle_cpu_s_per_s", {}).items())
    cpu_line = ", ".join(f"{n} {num(v, 1)} s ({ratio(v, base_cpu)} × {BASELINE})"
                         for n, v in cpu.items())
    return (table(["measurement", "configuration", "median", "range", f"÷ {BASELINE}",
                   "target", "met", "daemon CPU", f"CPU ÷ {BASELINE}", "errors"], rows_of(res))
            + f"\n\nConfigurations: auth+tls = tokens, daemon signatures, chunk capabilities "
              f"and gRPC over TLS; auth = the same without TLS; {BASELINE} = "
              f"`--insecure-no-auth`, no TLS. Issue 12's targets: auth + TLS costs at most "
              f"{TARGET_COST['metadata']:.0%} of metadata ops/s and "
              f"{TARGET_COST['data']:.0%} of data-path MB/s (ratio ≥ the target column). "
              f"Repetitions interleaved over the three clusters, order rotated; medians. "
              f"Gets are warm (page cache). Daemon CPU: user+system seconds the cluster's "
              f"six daemons spent during the measurement beyond their idle rate (measured "
              f"first: {idle_line}), per operation at the window's rate (warm-up included) or, "
              f"with the client's, per GiB moved; less disturbed by other load than "
              f"throughput. Over the whole benchmark: {cpu_line}."
            + _probe_line(res.get("tls_probe")))


def _probe_line(probe: dict | None) -> str:
    """What TLS alone costs one gRPC stream here (bench/tls_probe.py): the data path's floor."""
    if not probe:
        return ""
    plain, tls = probe["plain"], probe["tls"]
    return (f"\n\nTLS alone, one gRPC stream of 1 MiB messages in one process (no gfs code; "
            f"bench/tls_probe.py): plaintext {num(plain['mb_s']['median'])} MB/s, TLS "
            f"{num(tls['mb_s']['median'])} MB/s ({ratio(tls['mb_s']['median'], plain['mb_s']['median'])}"
            f" × plaintext); CPU of both ends {num(plain['cpu_s_per_gib']['median'], 2)} → "
            f"{num(tls['cpu_s_per_gib']['median'], 2)} s/GiB. A get crosses one such hop, a put "
            f"with replication 3 three.")


def figures(res: dict, refs: dict) -> list[dict]:
    panels: dict[str, dict] = {}
    for p in res["metadata"]:
        for name, c in p["configs"].items():
            panels.setdefault(p["op"], {}).setdefault(name, []).append(
                (p["concurrency"], c["ops_s"]["median"], c["ops_s"]["min"], c["ops_s"]["max"]))
    bars: dict[str, dict] = {}
    for p in res["data"]:
        for name, c in p["configs"].items():
            bars.setdefault(f"{p['size'] >> 20} MiB, r={p['replication']}", {}).setdefault(
                name, {})[p["op"]] = (c["mb_s"]["median"], c["mb_s"]["min"], c["mb_s"]["max"])
    return [{"kind": "throughput", "name": "auth-cost-metadata", "ylabel": "ops/s",
             "title": "metadata ops/s: auth + TLS, auth, insecure", "panels": panels},
            {"kind": "bars", "name": "auth-cost-data", "ylabel": "MB/s",
             "title": "put/get MB/s: auth + TLS, auth, insecure", "panels": bars}]


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import main as bench_main
    return bench_main([NAME, *(argv or [])])


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    import sys
    sys.exit(main(sys.argv[1:]))
