"""gfs and etcd side by side: the table and figures shared by the benchmarks that run the same
operations against both (metadata, small files)."""
from __future__ import annotations

import dataclasses
import os

from bench.common import median, num, ratio, rng, table
from bench.load import LoadPool, summarize


def run_both(run_gfs, run_etcd, cfg: dict, ctx, also: dict | None = None) -> dict:
    """gfs and etcd (and the references in `also`: name -> run function) from the same pool of
    client processes, never at the same time, taking turns: one repetition of every point on
    gfs, then on etcd, then the next repetition (each on a fresh cluster). This machine's speed
    drifts by a quarter over minutes; measured one after the other, two systems could land in
    different phases and their ratio with them. Taking turns puts each repetition of every
    system into neighbouring minutes."""
    systems = {"gfs": run_gfs, "etcd": run_etcd, **(also or {})}
    turns: dict[str, list[dict]] = {name: [] for name in systems}
    with LoadPool() as pool:
        for rep in range(cfg["reps"]):
            work = os.path.join(ctx.work, f"turn-{rep + 1}")     # fresh clusters each turn
            os.makedirs(work, exist_ok=True)
            for name, run in systems.items():
                turns[name].append(run(pool, {**cfg, "reps": 1},
                                       dataclasses.replace(ctx, work=work)))
    return {name: merge_turns(parts) for name, parts in turns.items()}


def merge_turns(parts: list[dict]) -> dict:
    """One system's result from its turns: every point's repetitions together, the daemons'
    CPU summed and their peak RSS the highest (a skipped system stays skipped)."""
    if any("skipped" in part for part in parts):
        return next(part for part in parts if "skipped" in part)
    runs: dict[tuple[str, int], list[dict]] = {}
    for part in parts:
        for p in part["points"]:
            runs.setdefault((p["op"], p["concurrency"]), []).extend(p["runs"])
    merged = {**parts[0], "points": [summarize(op, conc, r) for (op, conc), r in runs.items()],
              "ops_done": sum(part.get("ops_done", 0) for part in parts)}
    processes: dict[str, dict] = {}
    for part in parts:
        for name, st in (part.get("processes") or {}).items():
            seen = processes.setdefault(name, {"peak_rss": None, "cpu_s": None})
            if st["peak_rss"] is not None:
                seen["peak_rss"] = max(seen["peak_rss"] or 0, st["peak_rss"])
            if st["cpu_s"] is not None:
                seen["cpu_s"] = (seen["cpu_s"] or 0) + st["cpu_s"]
    if processes:
        merged["processes"] = processes
    return merged


def ops_done(points: list[dict]) -> int:
    """Operations measured over a sweep (for the daemons' CPU per operation)."""
    return sum(r["ops"] for p in points for r in p["runs"])


def limit_of(op: str, refs: dict, writes: set[str]) -> tuple[str, float]:
    """The machine limit an operation is compared with: the fsync rate for writes, loopback
    round trips for reads."""
    if op in writes:
        return "fsync", refs["fsync_ops_s"]["median"]
    return "RTT", refs["loopback_rtt_ops_s"]["median"]


def side_by_side(res: dict, refs: dict, writes: set[str], what: str) -> str:
    """The gfs/etcd table shared by the metadata and small-file benchmarks."""
    peer = {(p["op"], p["concurrency"]): p for p in res["etcd"].get("points", [])}
    rows = []
    for p in res["gfs"]["points"]:
        e = peer.get((p["op"], p["concurrency"]))
        name, limit = limit_of(p["op"], refs, writes)
        g = p["ops_s"]["median"]
        rows.append([p["op"], p["concurrency"], num(g), rng(p["ops_s"]), num(p["p50_ms"], 2),
                     num(p["p99_ms"], 2),
                     num(e["ops_s"]["median"]) if e else "–", rng(e["ops_s"]) if e else "",
                     num(e["p50_ms"], 2) if e else "–", num(e["p99_ms"], 2) if e else "–",
                     ratio(g, e["ops_s"]["median"]) if e else "–",
                     f"{ratio(g, limit, 3)} × {name}",
                     f"{p['errors']} / {e['errors']}" if e else str(p["errors"])])
    out = table([what, "clients", "gfs ops/s", "range", "p50 ms", "p99 ms", "etcd ops/s",
                 "range", "p50 ms", "p99 ms", "gfs ÷ etcd", "gfs × limit", "errors gfs / etcd"],
                rows)
    if "skipped" in res["etcd"]:
        out += f"\n\netcd columns empty: {res['etcd']['skipped']}"
    ratios = [p["ops_s"]["median"] / peer[(p["op"], p["concurrency"])]["ops_s"]["median"]
              for p in res["gfs"]["points"] if peer.get((p["op"], p["concurrency"]))
              and peer[(p["op"], p["concurrency"])]["ops_s"]["median"]]
    if ratios:
        out += f"\n\nMedian gfs ÷ etcd over all rows: **{median(ratios):.2f}**."
    return out


def side_by_side_figures(res: dict, name: str, unit: str) -> list[dict]:
    """A throughput-vs-clients and a latency-percentiles figure, one panel per operation."""
    backends = {b: res[b].get("points", []) for b in ("gfs", "etcd")}
    ops = list(dict.fromkeys(p["op"] for p in backends["gfs"]))
    thr = {op: {b: [(p["concurrency"], p["ops_s"]["median"], p["ops_s"]["min"],
                     p["ops_s"]["max"]) for p in pts if p["op"] == op]
                for b, pts in backends.items() if pts} for op in ops}
    lat = {op: {b: {p["concurrency"]: (p["p50_ms"], p["p90_ms"], p["p99_ms"])
                    for p in pts if p["op"] == op}
                for b, pts in backends.items() if pts} for op in ops}
    return [{"kind": "throughput", "name": f"{name}-throughput", "ylabel": unit,
             "title": f"{name}: {unit} vs clients", "panels": thr},
            {"kind": "latency", "name": f"{name}-latency", "title": f"{name}: latency (ms)",
             "panels": lat}]
