"""Failover benchmark: kill -9 the leader N times, each time measuring from the kill to the next
acknowledged write, for gfs's 3 masters and, side by side, a 3-member etcd — both with their
daemons' default election timeout (1 s minimum, randomized up to 2 s, for both).

    ./run.sh bench failover [--kills 10]

A writer in this process retries a write (gfs: a new mkdir; etcd: a put of a new key) with
0.3 s per attempt and 10 ms between attempts, from the moment of the kill until one is
acknowledged. Between kills the killed daemon restarts and the group is given time to settle.
"""
from __future__ import annotations

import time

from bench import clusters
from bench.common import num, percentile, ratio, rng, spread, table
from bench.suite import Context, Option

NAME = "failover"
TITLE = "kill -9 the leader, time to the next acknowledged write"
ELECTION_TIMEOUT = 1.0          # both systems' default minimum election timeout, seconds
ATTEMPT = 0.3
FULL = {"kills": 10, "settle": 3.0}
QUICK = {"kills": 2, "settle": 1.0}


def _kills(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--kills needs a whole number of at least 1, not {text!r}")
    return int(text)


OPTIONS = [Option("--kills", "kills", _kills, "leader kills per system")]


def until_acknowledged(write, timeout: float = 60.0) -> float:
    """Call write(attempt) until one returns; the monotonic time it did."""
    end = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            write(attempt)
            return time.monotonic()
        except Exception as err:
            if time.monotonic() > end:
                raise RuntimeError(f"no write acknowledged within {timeout:.0f}s: {err}") from err
        attempt += 1
        time.sleep(0.01)


def run_gfs(cfg: dict, ctx: Context) -> dict:
    times = []
    with clusters.gfs(ctx.work, "failover-gfs") as cluster, \
            cluster.client(deadline=ATTEMPT, attempt_timeout=ATTEMPT) as c:
        until_acknowledged(lambda i: c.mkdir("/fo", parents=True))
        for k in range(cfg["kills"]):
            cluster.wait_healthy(60)
            until_acknowledged(lambda i, k=k: c.mkdir(f"/fo/steady-{k}-{i}"))
            time.sleep(cfg["settle"])
            leader = cluster.leader()
            t_kill = time.monotonic()
            cluster.kill(leader)
            times.append(until_acknowledged(lambda i, k=k: c.mkdir(f"/fo/{k}-{i}")) - t_kill)
            print(f"  gfs kill {k + 1}: {leader} → next write after {times[-1]:.2f} s", flush=True)
            cluster.start(leader)
        cluster.wait_healthy(60)
        return {"seconds": times, "processes": clusters.gfs_processes(cluster)}


def run_etcd(cfg: dict, ctx: Context) -> dict:
    from bench.etcdkv import EtcdKV

    def body(cluster) -> dict:
        times = []
        with EtcdKV(cluster.endpoints(), deadline=ATTEMPT, attempt_timeout=ATTEMPT) as kv:
            for k in range(cfg["kills"]):
                until_acknowledged(lambda i, k=k: kv.put(b"/fo/steady-%d-%d" % (k, i), b"x"))
                time.sleep(cfg["settle"])
                leader = cluster.leader()
                t_kill = time.monotonic()
                cluster.kill(leader)
                times.append(until_acknowledged(
                    lambda i, k=k: kv.put(b"/fo/%d-%d" % (k, i), b"x")) - t_kill)
                print(f"  etcd kill {k + 1}: {leader} → next write after {times[-1]:.2f} s",
                      flush=True)
                cluster.start()
        return {"seconds": times}
    return clusters.with_etcd(ctx, "failover-etcd", body)


def run(cfg: dict, ctx: Context) -> dict:
    return {"gfs": run_gfs(cfg, ctx), "etcd": run_etcd(cfg, ctx)}


def report(res: dict, refs: dict) -> str:
    etcd = res["etcd"].get("seconds")
    peer = spread(etcd)["median"] if etcd else None
    rows = []
    for system in ("gfs", "etcd"):
        values = res[system].get("seconds")
        if not values:
            continue
        s = spread(values)
        rows.append([system, len(values), num(s["median"], 2), rng(s, 2),
                     num(percentile(values, 90), 2), ratio(s["median"], ELECTION_TIMEOUT),
                     ratio(s["median"], peer), " ".join(f"{v:.2f}" for v in values)])
    out = table(["3-member group", "leader kills", "median s", "range s", "p90 s",
                 "× election timeout (1 s)", "÷ etcd", "every kill, s"], rows)
    if "skipped" in res["etcd"]:
        out += f"\n\netcd row missing: {res['etcd']['skipped']}"
    return (f"kill -9 of the current leader → next acknowledged write, measured by one writer "
            f"retrying every 10 ms (0.3 s per attempt); default election timeouts (1–2 s) on "
            f"both sides; {res['config']['settle']:g} s of settling after each restart.\n\n" + out)


def figures(res: dict, refs: dict) -> list[dict]:
    series = {s: res[s]["seconds"] for s in ("gfs", "etcd") if res[s].get("seconds")}
    return [{"kind": "distribution", "name": "failover", "ylabel": "s",
             "title": "failover: kill -9 leader → next acknowledged write",
             "panels": {"every kill": series}}]
