"""The gateway beside nginx and HAProxy (Debian's), in one run on the same machine: the same
upstream (nginx serving static files, and a fixed gRPC answer over h2c — see
bench/gateway_peers.py), the same worker count (nginx worker_processes, HAProxy nbthread,
`gfs gateway --workers`), load from wrk (HTTP/1.1) and h2load (HTTP/2):

- small keep-alive: GET of a 128-byte file, kept-alive connections (wrk);
- small new conn: the same with `Connection: close`, a TCP connection per request (wrk);
- 1 MiB keep-alive: GET of a 1 MiB file (wrk);
- small h2: the 128-byte GET over cleartext HTTP/2, several streams per connection (h2load);
- gRPC unary: POST of a gRPC message with content-type application/grpc, answered with a
  message and the grpc-status trailer (h2load; a real grpcio call checks each proxy first).

Figures per proxy: requests/s (median of the repetitions, min–max), p99 latency, the peak RSS of
the proxy's processes during the load, and the ratio to nginx beside issue 17's targets
(≥ 0.5× nginx on small responses, ≥ 0.8× on 1 MiB bodies). Each repetition measures the three
proxies one after the other, the order rotated from one repetition to the next, so load from
elsewhere on a shared machine falls on all alike.

    ./run.sh bench gateway [--quick] [--reps 3] [--seconds 10] [--workers 1]

(`./run.sh bench` installs nginx, haproxy, wrk and nghttp2-client when run as root.) The
memory-under-churn half of the issue is `./run.sh bench gateway_memory`.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench import gateway_peers as peers
from bench.common import (median, num, parse_choices, parse_ints, parse_seconds, ratio,
                          rng, spread, table)
from bench.httpload import LoadResult, h2load, wrk
from bench.rss import Sampler, cpu_seconds, raise_nofile, tree_pids
from bench.suite import Context, Option

NAME = "gateway"
TITLE = "the gfs gateway beside nginx and HAProxy (same upstream, same workers)"
TARGETS = {"small keep-alive": 0.5, "small new conn": 0.5, "small h2": 0.5,
           "1 MiB keep-alive": 0.8}
SCENARIOS = ("small keep-alive", "small new conn", "1 MiB keep-alive", "small h2", "gRPC unary")
FULL = {"seconds": 10.0, "warmup": 2.0, "reps": 3, "workers": 1, "connections": 32,
        "big_connections": 8, "h2_clients": 8, "h2_streams": 16,
        "scenarios": list(SCENARIOS), "proxies": list(peers.PROXIES)}
QUICK = {**FULL, "seconds": 2.0, "warmup": 1.0, "reps": 1}


def _positive(text: str) -> int:
    values = parse_ints(text)
    if len(values) != 1:
        raise ValueError(f"expected one whole number: {text!r}")
    return values[0]


def _scenarios(text: str) -> list[str]:
    return parse_choices(text, SCENARIOS, "scenario")


OPTIONS = [Option("--seconds", "seconds", parse_seconds, "measured seconds per point"),
           Option("--warmup", "warmup", parse_seconds, "warm-up seconds before each point"),
           Option("--workers", "workers", _positive,
                  "worker processes (threads for HAProxy) of every proxy"),
           Option("--scenarios", "scenarios", _scenarios,
                  "which loads, comma-separated: " + ", ".join(SCENARIOS))]


def order(proxies: list[str], rep: int) -> list[str]:
    k = rep % len(proxies)
    return proxies[k:] + proxies[:k]


def load(scenario: str, proxy: peers.Proc, cfg: dict, seconds: float, grpc_file: str) -> LoadResult:
    h1 = f"http://127.0.0.1:{proxy.h1}"
    h2 = f"http://127.0.0.1:{proxy.h2}"
    if scenario == "small keep-alive":
        return wrk(f"{h1}/small", cfg["connections"], seconds)
    if scenario == "small new conn":
        return wrk(f"{h1}/small", cfg["connections"], seconds, new_conn=True)
    if scenario == "1 MiB keep-alive":
        return wrk(f"{h1}/big", cfg["big_connections"], seconds)
    if scenario == "small h2":
        return h2load(f"{h2}/small", cfg["h2_clients"], cfg["h2_streams"], seconds)
    if scenario == "gRPC unary":
        return h2load(f"{h2}{peers.GRPC_PATH}", cfg["h2_clients"], cfg["h2_streams"], seconds,
                      data_file=grpc_file,
                      headers=["content-type: application/grpc", "te: trailers"])
    raise ValueError(scenario)


def run(cfg: dict, ctx: Context) -> dict:
    peers.require_tools()
    raise_nofile()
    base = Path(ctx.work) / "gateway"
    base.mkdir(parents=True, exist_ok=True)
    grpc_file = base / "grpc-request.bin"
    grpc_file.write_bytes(peers.grpc_frame(peers.GRPC_REQUEST))
    started: list[peers.Proc] = []
    out: dict = {"proxies": {}, "upstream": "nginx (static files, 1 worker)"}
    try:
        upstream = peers.start_upstream(base)
        started.append(upstream)
        procs = {}
        for name in cfg["proxies"]:
            procs[name] = peers.STARTERS[name](base, upstream, cfg["workers"])
            started.append(procs[name])
        time.sleep(0.5)                                  # the gateway's workers come up
        for name, proc in procs.items():
            peers.check_grpc(proc.h2)
            pids = tree_pids(proc.pid)
            with Sampler(pids) as idle:
                pass
            out["proxies"][name] = {"idle_rss": idle.peak, "processes": len(pids),
                                    "points": {s: [] for s in cfg["scenarios"]}}
        for rep in range(cfg["reps"]):
            for scenario in cfg["scenarios"]:
                for name in order(list(procs), rep):
                    proc = procs[name]
                    if rep == 0:
                        load(scenario, proc, cfg, cfg["warmup"], str(grpc_file))
                    pids = tree_pids(proc.pid)
                    cpu = cpu_seconds(pids)
                    with Sampler(pids) as s:
                        got = load(scenario, proc, cfg, cfg["seconds"], str(grpc_file))
                    cpu = cpu_seconds(pids) - cpu
                    point = {**got.as_dict(), "peak_rss": s.peak, "cpu_s": cpu,
                             "cpu_us_per_req": cpu * 1e6 / got.requests if got.requests
                             else float("nan")}
                    out["proxies"][name]["points"][scenario].append(point)
                    print(f"bench: gateway {scenario:17} {name:8} {got.rps:>10,.0f} req/s  "
                          f"p99 {got.p99_ms:7.2f} ms  RSS {s.peak / 2**20:5.0f} MiB  "
                          f"CPU {point['cpu_us_per_req']:6.0f} µs/req  "
                          f"errors {got.errors}", flush=True)
    finally:
        for proc in reversed(started):
            proc.stop()
    out["summary"] = summarize(out, cfg)
    return out


def summarize(res: dict, cfg: dict) -> dict:
    """{scenario: {proxy: {rps (spread), p99_ms, peak_rss, errors, ratio}}}."""
    summary: dict = {}
    for scenario in cfg["scenarios"]:
        row = {}
        for name, part in res["proxies"].items():
            pts = part["points"][scenario]
            row[name] = {"rps": spread([p["rps"] for p in pts]),
                         "p99_ms": median([p["p99_ms"] for p in pts]),
                         "peak_rss": max((p["peak_rss"] for p in pts), default=0),
                         "cpu_us_per_req": median([p["cpu_us_per_req"] for p in pts]),
                         "errors": sum(p["errors"] for p in pts)}
        ref = row.get("nginx", {}).get("rps", {}).get("median")
        for name, fig in row.items():
            fig["ratio"] = fig["rps"]["median"] / ref if ref else None
        summary[scenario] = row
    return summary


def report(res: dict, refs: dict) -> str:
    rows = []
    for scenario, row in res["summary"].items():
        target = TARGETS.get(scenario)
        for name, fig in row.items():
            met = ""
            if name == "gfs" and target is not None and fig["ratio"] is not None:
                met = f"≥ {target} {'yes' if fig['ratio'] >= target else '**no**'}"
            nginx = row.get("nginx", {})
            rows.append([scenario, name, num(fig["rps"]["median"]), rng(fig["rps"]),
                         num(fig["p99_ms"], 2), num(fig["peak_rss"] / 2**20),
                         num(fig["cpu_us_per_req"]),
                         ratio(fig["rps"]["median"], nginx.get("rps", {}).get("median")),
                         ratio(nginx.get("cpu_us_per_req"), fig["cpu_us_per_req"]),
                         met, fig["errors"]])
    cfg = res["config"]
    idle = ", ".join(f"{n} {p['idle_rss'] / 2**20:.0f} MiB ({p['processes']} processes)"
                     for n, p in res["proxies"].items())
    return (table(["load", "proxy", "req/s", "range", "p99 ms", "peak RSS MiB", "CPU µs/req",
                   "req/s × nginx", "CPU: nginx ÷ it", "target (gfs)", "errors"], rows)
            + f"\n\n{cfg['workers']} worker(s) per proxy; upstream: {res['upstream']}. "
              f"wrk: 1 thread, {cfg['connections']} connections ({cfg['big_connections']} for "
              f"1 MiB); h2load: {cfg['h2_clients']} connections × {cfg['h2_streams']} streams. "
              f"{cfg['seconds']:g} s per point, {cfg['reps']} repetition(s), median quoted. "
              f"RSS: all of a proxy's processes, peak during the load; idle: {idle}. "
              "CPU µs/req: the proxy's processes' user + system CPU time over the load divided "
              "by the requests done (on a busy machine steadier than req/s, which also depends "
              "on what else runs); `CPU: nginx ÷ it` is nginx's CPU per request over this "
              "proxy's (1.00 = as cheap as nginx). Load generator, upstream and proxy share the "
              "machine's cores.")


def figures(res: dict, refs: dict) -> list[dict]:
    ratios: dict = {}
    memory: dict = {}
    for scenario, row in res["summary"].items():
        ref = row.get("nginx", {}).get("rps", {}).get("median")
        label = "\n".join(scenario.rsplit(" ", 1))        # two lines: the labels fit
        for name in sorted(row, key=lambda n: n != "gfs"):  # gfs first: its colour (blue)
            fig, s = row[name], row[name]["rps"]
            if ref:
                ratios.setdefault(name, {})[label] = (s["median"] / ref, s["min"] / ref,
                                                      s["max"] / ref)
            mib = fig["peak_rss"] / 2**20
            memory.setdefault(name, {})[label] = (mib, mib, mib)
    return [{"name": "gateway-peers", "kind": "bars", "ylabel": "",
             "title": "gateway beside nginx and HAProxy",
             "panels": {"req/s ÷ nginx's": ratios, "peak RSS (MiB)": memory},
             "refs": {"req/s ÷ nginx's": {"target, small": 0.5, "target, 1 MiB": 0.8}}}]
