"""Tiering benchmark: what the cold tier saves and costs in a running cluster (3 masters,
3 chunkservers), and how fast a new, empty chunkserver is filled by rebalancing — beside the
machine's raw disk rates measured at the start of the same run.

    ./run.sh bench tiering [--size 1GiB] [--capacity 2GiB] [--balance-configs 1:64MiB,2:1GiB]

Tiers, per data kind (JSON log lines generated from --seed, and random bytes), per repetition:
put one file of --size with replication 3; get it whole (hash-checked, in a client process as
bench/datapath.py does) while its replicas are still in the page cache (warm), then again after
every chunk file was evicted from the page cache; `set_class(path, "cold")` and time until
`tier_status` shows every replica in the cold tier; the bytes its cold files take on the
chunkservers' disks ÷ the logical bytes of those replicas (stored ÷ logical); the same two gets
while cold; back to hot, timed the same way. Move MB/s = logical bytes of every replica moved ÷
seconds from `set_class` until all are in the new tier (1 MB = 10^6 bytes).

Rebalancing, per --balance-configs entry (master --balance-concurrency : --balance-rate) and
repetition, on a fresh cluster: 3 chunkservers with --capacity each are filled to about 60 %
(replication 3, so each holds a replica of every chunk); a 4th, empty chunkserver of the same
capacity is started, and `balance_status()` is sampled until the leader says "balanced" with the
spread of disk use (max − min over live chunkservers) within its threshold. Reported: seconds from
the start to then, bytes moved, MB/s, the spread and the new server's use over time.
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from bench import clusters
from bench.common import (
    MB,
    PIECE,
    GiB,
    keep_peaks,
    num,
    parse_size,
    ratio,
    rng,
    spread,
    table,
)
from bench.datapath import evict_chunks, make_source, measure, random_bytes, reclaim
from bench.repair_suite import parse_configs
from bench.suite import Context, Option
from gfs.units import human_size

NAME = "tiering"
TITLE = "storage tiers: compression, tier moves, cold reads, rebalancing"
CHUNK = 64 << 20              # the master's default --chunk-size
FILL = 0.6                    # of each chunkserver's capacity, before the new one starts
KIND_LABELS = {"text": "JSON log lines", "random": "random bytes"}


def parse_capacity(text: str) -> int:
    """A chunkserver --capacity that leaves room for one more chunk after the fill: placement
    only picks servers with a whole chunk size free."""
    size = parse_size(text)
    least = math.ceil(CHUNK / (1 - FILL) / PIECE) * PIECE
    if size < least:
        raise ValueError(f"--capacity must be at least {human_size(least)}: chunkservers are "
                         f"filled to {FILL:.0%} and placement wants a whole chunk "
                         f"({human_size(CHUNK)}) free besides, not {text!r}")
    return size


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KIND_LABELS):
        raise ValueError(f"--kinds wants some of {', '.join(KIND_LABELS)} "
                         f"(e.g. text,random), not {text!r}")
    return list(dict.fromkeys(kinds))


FULL = {"size": GiB, "kinds": ["text", "random"], "tier_concurrency": 2, "capacity": 2 * GiB,
        "balance_configs": [(1, 64 << 20), (2, GiB)], "reps": 3}
QUICK = {**FULL, "size": 64 << 20, "capacity": 256 << 20, "balance_configs": [(1, 64 << 20)],
         "reps": 1}
OPTIONS = [Option("--size", "size", parse_size, "bytes of each file moved between tiers, e.g. 1GiB"),
           Option("--kinds", "kinds", parse_kinds,
                  "data moved between tiers: text (JSON log lines), random; e.g. text,random"),
           Option("--capacity", "capacity", parse_capacity,
                  "rebalancing: --capacity of every chunkserver (at least 160MiB), e.g. 2GiB"),
           Option("--balance-configs", "balance_configs",
                  functools.partial(parse_configs, flag="--balance-configs",
                                    example="1:64MiB,2:1GiB"),
                  "rebalancing: master --balance-concurrency:--balance-rate pairs "
                  "(rate 0 = unthrottled), e.g. 1:64MiB,2:1GiB")]

REPLICATION = 3
POLL_S = 0.1                  # tier_status polling; the mover itself works in 2 s passes
BALANCE_POLL_S = 0.5
CHUNKSERVER = {"heartbeat-interval": 0.5, "scrub-rate": 0}   # fresh figures; no scrub reads
MASTER = {"dead-after": 5}    # a new leader trusts its replica map (and moves chunks) this soon


# --- data ----------------------------------------------------------------------------------

LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
SERVICES = ("api", "auth", "billing", "search", "upload", "worker")
ROUTES = ("users", "orders", "files", "sessions", "reports")
STATUSES = (200, 200, 200, 201, 204, 304, 404, 500)


def log_lines(rand, n: int) -> bytes:
    """n bytes of JSON log records (a request id, a time, a route, figures per line): text
    that compresses about as well as real service logs (zstd level 3: ~0.24), unlike zeros."""
    lines: list[str] = []
    size = 0
    while size < n:
        line = (f'{{"ts":{1_795_000_000_000 + rand.getrandbits(26)},'
                f'"level":"{rand.choice(LEVELS)}","svc":"{rand.choice(SERVICES)}",'
                f'"req":"{rand.getrandbits(64):016x}",'
                f'"route":"/api/v1/{rand.choice(ROUTES)}/{rand.getrandbits(17)}",'
                f'"status":{rand.choice(STATUSES)},"ms":{rand.random() * 300:.1f},'
                f'"bytes":{rand.getrandbits(16)}}}\n')
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:n]


KINDS: dict[str, Callable] = {"text": log_lines, "random": random_bytes}


# --- parts ---------------------------------------------------------------------------------

def _part(name: str, body: Callable[[], dict]) -> dict:
    """Run one part; a failure becomes {"error": ...} so the other parts still run."""
    print(f"  tiering: {name}", flush=True)
    try:
        return body()
    except Exception as err:              # shown in the part's section; the run exits non-zero
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"}


def run(cfg: dict, ctx: Context) -> dict:
    processes: dict[str, dict] = {}
    res = {"tiers": _part("tiers", lambda: tiers(cfg, ctx, processes)),
           "balance": _part("rebalancing", lambda: balance(cfg, ctx, processes))}
    res["part_errors"] = [f"{part}: {r['error']}" for part, r in res.items() if "error" in r]
    res["processes"] = processes
    return res


# --- tiers: compression, moves, gets -------------------------------------------------------

def tiers(cfg: dict, ctx: Context, processes: dict) -> dict:
    opts = {"master": {**MASTER, "tier-concurrency": cfg["tier_concurrency"]},
            "chunkserver": CHUNKSERVER}
    kinds = {}
    with clusters.gfs(ctx.work, "tiering-gfs", chunkservers=3, options=opts) as cluster, \
            cluster.client(deadline=120) as c:
        c.mkdir("/bench")                     # bench.datapath's get clients stat it first
        poll_until(c.health, lambda h: h["replica_map_complete"], 60, BALANCE_POLL_S,
                   lambda h: f"the leader's replica map is not complete ({h['status']})")
        for kind in cfg["kinds"]:
            source, digest = make_source(ctx.work, cfg["size"], ctx.seed, KINDS[kind],
                                         f"tiering-{kind}")
            try:
                runs = [cycle(cluster, c, f"/bench/{kind}-{rep}", source, digest, cfg, ctx.work)
                        for rep in range(cfg["reps"])]
            finally:
                os.unlink(source)
            kinds[kind] = {**{k: spread([r[k] for r in runs]) for k in runs[0]}, "runs": runs}
        keep_peaks(processes, clusters.gfs_processes(cluster))
    return {"kinds": kinds, "concurrency": cfg["tier_concurrency"]}


def cycle(cluster, c, path: str, source: str, digest: int, cfg: dict, work: str) -> dict:
    """One file through both tiers: put, gets while hot, to cold, gets while cold, back to
    hot; then it is deleted. Flat figures of this repetition."""
    size = cfg["size"]
    c.put(source, path, replication=REPLICATION)
    timeout = move_timeout(len(c.stat(path).chunks), cfg["tier_concurrency"])
    wait_tier(c, path, "hot", timeout)
    hot = gets(cluster, path, source, digest, size, work)
    to_cold = move(c, path, "cold", timeout)
    stored = cold_stored_bytes(cluster, c.tier_status(path))
    cold = gets(cluster, path, source, digest, size, work)
    to_hot = move(c, path, "hot", timeout)
    reclaim(cluster, c, path)
    print(f"    {path}: stored ÷ logical {stored / to_cold['bytes']:.2f}, "
          f"hot → cold {to_cold['mb_s']:.0f} MB/s, cold → hot {to_hot['mb_s']:.0f} MB/s, "
          f"get hot {hot['evicted']:.0f} / cold {cold['evicted']:.0f} MB/s", flush=True)
    return {"stored_ratio": stored / to_cold["bytes"], "moved_bytes": to_cold["bytes"],
            "moves": to_cold["moves"], "to_cold_mb_s": to_cold["mb_s"], "to_cold_s": to_cold["s"],
            "to_hot_mb_s": to_hot["mb_s"], "to_hot_s": to_hot["s"],
            "hot_evicted_mb_s": hot["evicted"], "hot_warm_mb_s": hot["warm"],
            "cold_evicted_mb_s": cold["evicted"], "cold_warm_mb_s": cold["warm"],
            "cold_hot_evicted": cold["evicted"] / hot["evicted"],
            "cold_hot_warm": cold["warm"] / hot["warm"]}


def move_timeout(chunks: int, concurrency: int) -> float:
    """Generous: every replica of a file of `chunks` moved at 5 MB/s, at least 2 minutes."""
    return max(120.0, REPLICATION * chunks * CHUNK / (5 * MB * concurrency))


def in_tier(status: dict, tier: str) -> bool:
    """Every chunk of the file has all its replicas reported, each in `tier`."""
    return bool(status["chunks"]) and all(
        len(ch["replicas"]) >= REPLICATION and all(r["tier"] == tier for r in ch["replicas"])
        for ch in status["chunks"])


def poll_until(fetch: Callable[[], dict], done: Callable[[dict], bool], timeout: float,
               every: float, why: Callable[[dict], str]) -> dict:
    """fetch() every `every` s until done(answer); the last answer. TimeoutError after
    `timeout` s, saying why(last answer)."""
    deadline = time.monotonic() + timeout
    while not done(answer := fetch()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout:.0f} s: {why(answer)}")
        time.sleep(every)
    return answer


def wait_tier(c, path: str, tier: str, timeout: float) -> dict:
    """Poll tier_status until every replica of `path` is in `tier`; its last answer."""
    def why(status: dict) -> str:
        seen = Counter(r["tier"] or "unreported" for ch in status["chunks"] for r in ch["replicas"])
        return f"{path}: not every replica in the {tier} tier (replicas by tier: {dict(seen)})"

    return poll_until(lambda: c.tier_status(path), lambda st: in_tier(st, tier), timeout, POLL_S,
                      why)


def move(c, path: str, tier: str, timeout: float) -> dict:
    """Set the file's class and time until every replica is in that tier."""
    t = time.monotonic()
    c.set_class(path, tier)
    status = wait_tier(c, path, tier, timeout)
    seconds = time.monotonic() - t
    moved = sum(ch["length"] * len(ch["replicas"]) for ch in status["chunks"])
    return {"s": seconds, "bytes": moved, "mb_s": moved / seconds / MB,
            "moves": sum(len(ch["replicas"]) for ch in status["chunks"])}


def cold_stored_bytes(cluster, status: dict) -> int:
    """Bytes the file's cold data files take on every chunkserver's disk. tier_status has no
    stored sizes, so they are read from the store's layout: DATA/cold/<xx>/<handle:016x>-<v>.zst
    with xx the handle's low byte (chunkserver/store.py)."""
    total = 0
    for cs in cluster.spec["chunkservers"]:
        for ch in status["chunks"]:
            fan_out = Path(cs["data"]) / "cold" / f"{ch['handle'] & 0xFF:02x}"
            total += sum(p.stat().st_size for p in fan_out.glob(f"{ch['handle']:016x}-*.zst"))
    return total


def gets(cluster, path: str, source: str, digest: int, size: int, work: str) -> dict:
    """MB/s of a whole hash-checked get while the replicas are still in the page cache (just
    written by the put or the move), then after every chunk file was evicted from it."""
    masters = cluster.master_addresses()
    warm = measure(masters, "get", [[path]], source, digest, REPLICATION, size, work)
    evict_chunks(cluster)
    evicted = measure(masters, "get", [[path]], source, digest, REPLICATION, size, work)
    for m in (warm, evicted):
        if m["errors"]:
            raise RuntimeError(f"get of {path} failed: {m['first_error']}")
    return {"warm": warm["mb_s"], "evicted": evicted["mb_s"]}


# --- rebalancing onto a new, empty chunkserver --------------------------------------------

BALANCE_KEYS = ("converge_s", "first_move_s", "moved", "moved_bytes", "mb_s", "moving_mb_s",
                "final_spread", "new_use", "threshold")


def balance(cfg: dict, ctx: Context, processes: dict) -> dict:
    from gfs.client import Client
    if not hasattr(Client, "balance_status"):
        return {"skipped": "this gfs has no rebalancing (Client.balance_status is missing)"}
    settings = []
    for concurrency, rate in cfg["balance_configs"]:
        runs = []
        for rep in range(cfg["reps"]):
            print(f"  tiering: rebalancing, {concurrency} move(s) at once, rate "
                  f"{_rate(rate)}, repetition {rep + 1}", flush=True)
            runs.append(converge(cfg, ctx, concurrency, rate, f"tiering-balance-{rep}",
                                 processes))
        settings.append({"concurrency": concurrency, "rate": rate, "runs": runs,
                         **{k: spread([r[k] for r in runs]) for k in BALANCE_KEYS}})
    return {"settings": settings}


def converge(cfg: dict, ctx: Context, concurrency: int, rate: int, name: str,
             processes: dict) -> dict:
    """One fresh cluster: fill 3 chunkservers, start a 4th, follow the balancer until done."""
    opts = {"master": {**MASTER, "balance-concurrency": concurrency, "balance-rate": rate},
            "chunkserver": {**CHUNKSERVER, "capacity": cfg["capacity"]}}
    try:
        with clusters.gfs(ctx.work, name, chunkservers=3, options=opts) as cluster, \
                cluster.client(deadline=120) as c:
            filled = fill(c, cfg, ctx)
            before = wait_balanced(c, None, 120)      # replica map complete, 3 servers even
            new = cluster.add_chunkserver()
            t0 = time.monotonic()
            cluster.start(new)
            samples = follow(c, cluster.daemon(new)["bind"], t0, before,
                             balance_timeout(cfg, rate))
            under = c.health()["under_replicated"]
            keep_peaks(processes, clusters.gfs_processes(cluster))
    finally:
        shutil.rmtree(os.path.join(ctx.work, name), ignore_errors=True)
    return outcome(samples, filled, under)


def fill(c, cfg: dict, ctx: Context) -> int:
    """Put replication-3 files (each 1/20 of the capacity) until each of the 3 chunkservers,
    which all hold a replica of every chunk, is about FILL full; the bytes put."""
    size = max(PIECE, cfg["capacity"] // 20 // PIECE * PIECE)
    count = max(1, round(cfg["capacity"] * FILL / size))
    source, _ = make_source(ctx.work, size, ctx.seed, name="tiering-fill")
    try:
        c.mkdir("/fill")
        for i in range(count):
            c.put(source, f"/fill/{i}", replication=REPLICATION)
    finally:
        os.unlink(source)
    return count * size


def balance_timeout(cfg: dict, rate: int) -> float:
    """Generous: ten times the new server's share of the data at the rate cap (or 64 MiB/s)."""
    share = cfg["capacity"] * FILL * REPLICATION / 4
    return 180.0 + 10 * share / min(rate or 64 << 20, 64 << 20)


def _balanced(st: dict, address: str | None) -> bool:
    """The leader says balanced, the spread is within the threshold and (when given) the new
    server is among the live ones and holds chunks."""
    new = next((s for s in st["servers"] if s["address"] == address), None)
    return (st["state"] == "balanced" and st["spread"] <= st["threshold"]
            and (address is None or (new is not None and new["chunk_count"] > 0)))


def wait_balanced(c, address: str | None, timeout: float) -> dict:
    return poll_until(c.balance_status, lambda st: _balanced(st, address), timeout,
                      BALANCE_POLL_S, _unbalanced)


def _unbalanced(st: dict) -> str:
    uses = ", ".join(f"{s['address']} {s['use']:.0%}" for s in st["servers"])
    return (f"not balanced: state {st['state']}"
            f"{' (' + st['reason'] + ')' if st.get('reason') else ''}, spread {st['spread']:.0%} "
            f"(threshold {st['threshold']:.0%}), use {uses}")


def follow(c, address: str, t0: float, before: dict, timeout: float) -> list[dict]:
    """Sample balance_status from the new server's start until it is balanced; `before` is
    the status before it started (the counters of moves are the leader's since it leads)."""
    samples = []
    while True:
        st = c.balance_status()
        new = next((s for s in st["servers"] if s["address"] == address), None)
        samples.append({"t": time.monotonic() - t0, "state": st["state"],
                        "spread": st["spread"], "threshold": st["threshold"],
                        "registered": new is not None, "new_use": new["use"] if new else 0.0,
                        "moved": st["moved"] - before["moved"],
                        "moved_bytes": st["moved_bytes"] - before["moved_bytes"]})
        if _balanced(st, address):
            return samples
        if samples[-1]["t"] > timeout:
            raise TimeoutError(f"after {timeout:.0f} s: {_unbalanced(st)}")
        time.sleep(BALANCE_POLL_S)


def moving_mb_s(samples: list[dict]) -> float:
    """MB/s between the first and the last sample that saw a move finish (the bytes of the
    moves finished in between): the balancer's pace while it moves, start-up left out."""
    steps = [b for a, b in pairwise(samples) if b["moved_bytes"] > a["moved_bytes"]]
    if len(steps) < 2:
        return float("nan")
    first, last = steps[0], steps[-1]
    return (last["moved_bytes"] - first["moved_bytes"]) / (last["t"] - first["t"]) / MB


def outcome(samples: list[dict], filled: int, under_replicated: int) -> dict:
    last = samples[-1]
    first = next((s["t"] for s in samples if s["moved_bytes"] > 0), last["t"])
    return {"converge_s": last["t"], "first_move_s": first, "moved": last["moved"],
            "moved_bytes": last["moved_bytes"], "mb_s": last["moved_bytes"] / last["t"] / MB,
            "moving_mb_s": moving_mb_s(samples), "final_spread": last["spread"],
            "new_use": last["new_use"], "threshold": last["threshold"], "filled_bytes": filled,
            "under_replicated": under_replicated, "samples": samples}


# --- report --------------------------------------------------------------------------------

def _rate(rate: int) -> str:
    return f"{human_size(rate)}/s" if rate else "unthrottled"


def _failed(part: dict) -> str | None:
    if "error" in part:
        return f"**Failed:** {part['error']}"
    if "skipped" in part:
        return f"Skipped: {part['skipped']}."
    return None


def report(res: dict, refs: dict) -> str:
    disk = {k: refs[f"disk_{k}_mb_s"]["median"] for k in ("write", "cold_read", "warm_read")}
    line = (f"References (this run, raw disk): write {num(disk['write'])} MB/s, cold read "
            f"{num(disk['cold_read'])} MB/s, warm read {num(disk['warm_read'])} MB/s.")
    failed = _failed(res["tiers"])
    tiers_part = (["### Compression, tier moves and gets", failed] if failed else
                  ["### Compression and tier moves", moves_report(res["tiers"], res["config"], disk),
                   "### Gets from each tier", gets_report(res["tiers"], disk)])
    return "\n\n".join([line, *tiers_part, "### Rebalancing onto a new, empty chunkserver",
                        _failed(res["balance"])
                        or balance_report(res["balance"], res["config"], disk)])


def moves_report(tiers_res: dict, cfg: dict, disk: dict) -> str:
    rows = []
    for name, k in tiers_res["kinds"].items():
        m = {key: v["median"] for key, v in k.items() if key != "runs"}
        rows.append([KIND_LABELS[name], human_size(cfg["size"]), int(m["moves"]),
                     num(m["stored_ratio"], 3), rng(k["stored_ratio"], 3),
                     f"{num(m['to_cold_mb_s'])} ({num(m['to_cold_s'], 1)} s)",
                     rng(k["to_cold_mb_s"]), ratio(m["to_cold_mb_s"], disk["write"]),
                     f"{num(m['to_hot_mb_s'])} ({num(m['to_hot_s'], 1)} s)",
                     rng(k["to_hot_mb_s"]), ratio(m["to_hot_mb_s"], disk["write"]),
                     num(disk["write"])])
    return (table(["data", "file", "replicas moved", "stored ÷ logical (cold)", "range",
                   "hot → cold MB/s", "range", "× raw write", "cold → hot MB/s", "range",
                   "× raw write", "raw write MB/s"], rows)
            + f"\n\nOne file per data kind, replication 3, {cfg['reps']} repetition(s). Stored ÷ "
              "logical: bytes of the file's cold data files on the chunkservers' disks ÷ its "
              "replicas' logical bytes (zstd frames, 1 MiB each; a frame that does not shrink "
              "is stored raw). Move MB/s: logical bytes of every replica moved ÷ seconds from "
              "`gfs tier set` to `tier status` showing all replicas in the new tier (polled "
              f"every {POLL_S:g} s). The leader's mover keeps {tiers_res['concurrency']} moves "
              f"(--tier-concurrency) running, starting the next as soon as one finishes; its "
              f"first pass comes up to 2 s after `tier set`.")


def gets_report(tiers_res: dict, disk: dict) -> str:
    rows = []
    for name, k in tiers_res["kinds"].items():
        for tier in ("hot", "cold"):
            ev, warm = k[f"{tier}_evicted_mb_s"], k[f"{tier}_warm_mb_s"]
            cold = tier == "cold"
            rows.append([KIND_LABELS[name] if not cold else "", tier,
                         num(ev["median"]), rng(ev), ratio(ev["median"], disk["cold_read"]),
                         num(k["cold_hot_evicted"]["median"], 2) if cold else "",
                         num(warm["median"]), rng(warm), ratio(warm["median"], disk["warm_read"]),
                         num(k["cold_hot_warm"]["median"], 2) if cold else ""])
    return (table(["data", "tier", "get MB/s (evicted)", "range", "× raw cold read",
                   "cold ÷ hot", "get MB/s (warm)", "range", "× raw warm read",
                   "cold ÷ hot (warm)"], rows)
            + f"\n\nA whole-file get by one client process, every byte checked against the "
              f"source's xxh3 hash. Evicted: every chunkserver's chunk files (both tiers) "
              f"dropped from the page cache first, like the raw cold read "
              f"({num(disk['cold_read'])} MB/s); warm: right after the put or the move wrote "
              f"them (raw warm read {num(disk['warm_read'])} MB/s).")


def balance_report(bal: dict, cfg: dict, disk: dict) -> str:
    rows = []
    for s in bal["settings"]:
        m = {k: s[k]["median"] for k in BALANCE_KEYS}
        rows.append([f"{_rate(s['rate'])} / {s['concurrency']}", f"{m['threshold']:.0%}",
                     f"{m['moved']:.0f} / {num(m['moved_bytes'] / MB)}",
                     num(m["first_move_s"], 1), num(m["converge_s"], 1), rng(s["converge_s"], 1),
                     num(m["mb_s"]), rng(s["mb_s"]), num(m["moving_mb_s"]),
                     ratio(m["moving_mb_s"], disk["write"]),
                     ratio(m["moving_mb_s"] * MB, s["rate"]) if s["rate"] else "–",
                     f"{m['final_spread']:.1%}", f"{m['new_use']:.0%}",
                     sum(r["under_replicated"] for r in s["runs"])])
    return (table(["--balance-rate / --balance-concurrency", "threshold", "chunks / MB moved",
                   "start → first move done s", "start → balanced s", "range", "MB/s", "range",
                   "MB/s while moving", "× raw write", "× rate cap",
                   "final spread", "new server use", "under-replicated after"], rows)
            + f"\n\n3 chunkservers with --capacity {human_size(cfg['capacity'])} each, filled "
              f"to about {FILL:.0%} with replication 3, then a 4th, empty one of the same "
              f"capacity started; {cfg['reps']} repetition(s) per setting, each on a fresh "
              f"cluster. Seconds from the new chunkserver's start until `balance_status` says "
              f"balanced with the spread (max − min disk use of the live chunkservers) within "
              f"the threshold, sampled every {BALANCE_POLL_S:g} s; MB/s = bytes the balancer "
              f"moved ÷ those seconds; while moving: between the first and the last finished "
              f"move seen (start-up left out). The balancer keeps --balance-concurrency moves "
              f"running, each copying at its share of --balance-rate. Raw write "
              f"{num(disk['write'])} MB/s.")


def figures(res: dict, refs: dict) -> list[dict]:
    out = []
    if "kinds" in res["tiers"]:
        out.append(_tier_bars(res["tiers"], refs))
    if "settings" in res["balance"]:
        out.append(_balance_lines(res["balance"]))
    return out


def _tier_bars(tiers_res: dict, refs: dict) -> dict:
    def bar(s: dict) -> tuple[float, float, float]:
        return s["median"], s["min"], s["max"]

    panels: dict[str, dict] = {"tier moves": {}, "gets, page cache evicted": {},
                               "gets, warm": {}}
    for name, k in tiers_res["kinds"].items():
        label = KIND_LABELS[name]
        panels["tier moves"][label] = {"hot → cold": bar(k["to_cold_mb_s"]),
                                       "cold → hot": bar(k["to_hot_mb_s"])}
        for panel, key in (("gets, page cache evicted", "evicted"), ("gets, warm", "warm")):
            panels[panel][label] = {t: bar(k[f"{t}_{key}_mb_s"]) for t in ("hot", "cold")}
    ref = {"tier moves": ("raw write", "disk_write_mb_s"),
           "gets, page cache evicted": ("raw cold read", "disk_cold_read_mb_s"),
           "gets, warm": ("raw warm read", "disk_warm_read_mb_s")}
    return {"kind": "bars", "name": "tiering-throughput", "ylabel": "MB/s",
            "title": "tiers: MB/s of moves and whole-file gets (3 replicas)", "panels": panels,
            "refs": {p: {label: refs[key]["median"]} for p, (label, key) in ref.items()}}


def _balance_lines(bal: dict) -> dict:
    panels: dict[str, dict] = {}
    refs: dict[str, dict] = {}
    for s in bal["settings"]:
        title = f"rate {_rate(s['rate'])}, {s['concurrency']} at once"
        series = panels.setdefault(title, {})
        for i, r in enumerate(s["runs"]):
            suffix = f" (run {i + 1})" if len(s["runs"]) > 1 else ""
            seen = [p for p in r["samples"] if p["registered"]]   # 4 servers in the spread
            series[f"spread{suffix}"] = [(p["t"], 100 * p["spread"]) for p in seen]
            series[f"new server use{suffix}"] = [(p["t"], 100 * p["new_use"]) for p in seen]
        refs[title] = {"threshold": 100 * s["threshold"]["median"]}
    return {"kind": "timeline", "name": "tiering-balance", "ylabel": "% of capacity",
            "xlabel": "s since the new chunkserver started",
            "title": "rebalancing onto a new, empty chunkserver", "panels": panels, "refs": refs}
