"""Bounded memory under churn (issue 17): the resident memory (RSS) of one gateway worker,
sampled every 0.25 s, at its warm level, during and after

- churn: N short connections, each a new TCP connection for one small GET through the gateway
  to the upstream (wrk with `Connection: close`, in slices of up to 10 s until N are done);
- a burst of slow clients: CLIENTS connections open at once, half dribbling a request head one
  header line a second and never finishing it, half sending nothing (bench/slowclients.py, its
  own process); the gateway's header timeout (default 10 s) must drop every one of them.

The warm level is the median RSS over `settle` seconds of quiet after a warm-up churn of
`warmup_conns` connections; "after" is the same over the quiet that follows each phase.
Target: within ±10 % of the warm level during the churn, and back within it after each phase.
The gateway runs with its defaults (one worker, header timeout 10 s, idle timeout 60 s) in
front of the upstream of bench/gateway.py.

    ./run.sh bench gateway_memory [--quick] [--conns 1000000] [--slow-clients 10000]

The full profile's N is 200,000 connections (a few minutes); the issue's 1,000,000 is
`--conns 1000000` (the report says how long it took at the rate measured).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import gateway_peers as peers
from bench.common import num, parse_ints, parse_seconds, table
from bench.httpload import wrk_count
from bench.rss import Sampler, raise_nofile
from bench.suite import Context, Option

NAME = "gateway_memory"
TITLE = "gateway worker RSS under connection churn and slow clients"
TOLERANCE = 0.10
FULL = {"conns": 200_000, "warmup_conns": 20_000, "slow_clients": 10_000, "connections": 32,
        "settle": 10.0, "hold": 40.0, "header_timeout": 10.0}
QUICK = {**FULL, "conns": 20_000, "warmup_conns": 5_000, "slow_clients": 1_000, "settle": 4.0,
         "hold": 25.0}


def _one(text: str) -> int:
    values = parse_ints(text)
    if len(values) != 1:
        raise ValueError(f"expected one whole number: {text!r}")
    return values[0]


OPTIONS = [Option("--conns", "conns", _one, "short connections of the churn (issue: 1000000)"),
           Option("--header-timeout", "header_timeout", parse_seconds,
                  "the gateway's --header-timeout (default 10 s: its own default); longer "
                  "keeps every slow client open at once on a machine slow to open them"),
           Option("--slow-clients", "slow_clients", _one,
                  "concurrent slow clients of the burst (issue: 10000)"),
           Option("--settle", "settle", parse_seconds,
                  "quiet seconds that measure the warm and after levels")]


def level(sampler: Sampler, start: float, end: float) -> float:
    values = sampler.between(start, end)
    return statistics.median(values) if values else float("nan")


def phase(s: Sampler, name: str, settle: float, work) -> dict:
    """`work()`'s figures, with the RSS during it (highest, lowest) and after it (the median
    over `settle` quiet seconds); marks `name` and `after NAME` on the sampler."""
    start = s.mark(name)
    got = work()
    end = s.mark(f"after {name}")
    during = s.between(start, end)
    time.sleep(settle)
    return {**got, "during_max": max(during, default=0), "during_min": min(during, default=0),
            "after": level(s, end, end + settle)}


def churn(proc: peers.Proc, n: int, connections: int) -> dict:
    t = time.monotonic()
    got = wrk_count(f"http://127.0.0.1:{proc.h1}/small", connections, n, new_conn=True)
    return {**got.as_dict(), "wall_s": time.monotonic() - t}


def slow_burst(proc: peers.Proc, clients: int, hold: float) -> dict:
    run = subprocess.run([sys.executable, "-m", "bench.slowclients", "--port", str(proc.h1),
                          "--clients", str(clients), "--hold", f"{hold:g}"],
                         capture_output=True, text=True, timeout=hold + 120, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"slow clients failed: {run.stderr.strip()[-500:]}")
    return json.loads(run.stdout)


def run(cfg: dict, ctx: Context) -> dict:
    peers.require_tools(["nginx", "wrk"])
    limit = raise_nofile()
    if cfg["slow_clients"] + 200 > limit:
        raise ValueError(f"{cfg['slow_clients']} slow clients need more open files than the "
                         f"hard limit ({limit})")
    base = Path(ctx.work) / "gateway-memory"
    base.mkdir(parents=True, exist_ok=True)
    settle = cfg["settle"]
    out: dict = {}
    upstream = peers.start_upstream(base)
    gateway = None
    try:
        gateway = peers.start_gateway(base, upstream, 1, "--header-timeout",
                                      f"{cfg['header_timeout']:g}s")
        with Sampler([gateway.pid], interval=0.25) as s:
            churn(gateway, cfg["warmup_conns"], cfg["connections"])
            t = s.mark("warm")
            time.sleep(settle)
            warm = level(s, t, t + settle)
            print(f"bench: gateway_memory warm RSS {warm / 2**20:.1f} MiB; churn of "
                  f"{cfg['conns']:,} connections", flush=True)
            out["churn"] = phase(s, "churn", settle,
                                 lambda: churn(gateway, cfg["conns"], cfg["connections"]))
            print(f"bench: gateway_memory churn at {out['churn']['rps']:,.0f} conn/s; "
                  f"{cfg['slow_clients']:,} slow clients", flush=True)
            out["slow"] = phase(s, "slow clients", settle,
                                lambda: slow_burst(gateway, cfg["slow_clients"],
                                                   max(cfg["hold"], 2 * cfg["header_timeout"] + 5)))
        out["warm"] = warm
        out["samples"] = s.points
        out["marks"] = s.marks
        out["alive"] = gateway.popen.poll() is None
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()
    return out


def _dev(value: float, warm: float) -> float:
    return (value / warm - 1) * 100


def verdicts(res: dict) -> dict[str, bool]:
    warm = res["warm"]
    ok = lambda v: abs(_dev(v, warm)) <= TOLERANCE * 100
    return {"churn during": ok(res["churn"]["during_max"]) and ok(res["churn"]["during_min"]),
            "churn after": ok(res["churn"]["after"]),
            "slow clients during": ok(res["slow"]["during_max"]),
            "slow clients after": ok(res["slow"]["after"])}


def report(res: dict, refs: dict) -> str:
    warm = res["warm"]
    c, sl = res["churn"], res["slow"]
    v = verdicts(res)
    mib = lambda b: num(b / 2**20, 1)
    pct = lambda b: f"{_dev(b, warm):+.1f} %"
    yes = lambda k: "yes" if v[k] else "**no**"
    rows = [["warm level", "", mib(warm), "", ""],
            ["churn", "peak during", mib(c["during_max"]), pct(c["during_max"]),
             yes("churn during")],
            ["churn", "lowest during", mib(c["during_min"]), pct(c["during_min"]), ""],
            ["churn", "after", mib(c["after"]), pct(c["after"]), yes("churn after")],
            ["slow clients", "peak during", mib(sl["during_max"]), pct(sl["during_max"]),
             yes("slow clients during")],
            ["slow clients", "after", mib(sl["after"]), pct(sl["after"]),
             yes("slow clients after")]]
    per_million = 1e6 / c["rps"] if c["rps"] else float("nan")
    drop = sl["dropped_after_s"]
    return (table(["phase", "", "RSS MiB", "vs warm", "within ±10 %"], rows)
            + f"\n\nChurn: {c['requests']:,} short connections in {c['seconds']:.0f} s "
              f"({c['rps']:,.0f} connections/s, p99 {c['p99_ms']:.1f} ms, {c['errors']} errors); "
              f"1,000,000 would take {per_million / 60:.1f} min at this rate. "
              f"Slow clients: {sl['opened']:,} of {sl['clients']:,} opened "
              f"({sl['refused']} refused) in {num(sl['all_open_after_s'], 1)} s, "
              f"{sl['peak_open']:,} open at once (header timeout "
              f"{res['config']['header_timeout']:g} s); "
              f"{sl['dropped']:,} dropped by the gateway (after {num(drop['min'], 1)}–"
              f"{num(drop['max'], 1)} s, median {num(drop['p50'], 1)} s), {sl['got_408']:,} "
              f"with a 408, {sl['still_open']:,} still open {res['config']['hold']:g} s after "
              "they opened. "
              f"Gateway still serving at the end: {'yes' if res['alive'] else '**no**'}.")


def figures(res: dict, refs: dict) -> list[dict]:
    marks = dict((label, t) for t, label in res["marks"])
    warm = res["warm"] / 2**20
    ends = {"churn": (marks["warm"], marks["slow clients"]),
            "slow clients": (marks["after churn"], res["samples"][-1][0])}
    panels, lines = {}, {}
    for title, (start, end) in ends.items():
        pts = [(t - start, v / 2**20) for t, v in res["samples"] if start <= t <= end]
        panels[f"{title} (from the warm level)" if title == "churn" else title] = {
            "worker RSS": pts}
    for title in panels:
        lines[title] = {"warm": warm, "+10 %": warm * 1.1, "−10 %": warm * 0.9}
    return [{"name": "gateway-memory", "kind": "timeline", "ylabel": "MiB",
             "xlabel": "s", "title": "gateway worker RSS: warm, during and after",
             "panels": panels, "refs": lines}]
