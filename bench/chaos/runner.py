"""The chaos runner: a local cluster (masters on their own network-namespace hosts when this
machine allows it), a concurrent client workload, a seeded nemesis, then the checkers.

    python -m bench.chaos [--minutes 3] [--seed N] [--masters 3] [--chunkservers 4]
                          [--capacity 2GiB] [--keep]

Prints a summary (operations, acknowledged, lost, linearizable, faults by kind, failover time)
and writes the full history to bench/results/chaos-<seed>.json. Exit status 1 on any loss,
linearizability violation or when the cluster does not return to full redundancy. A failed run
(or one that stops with an error) keeps its directory — every daemon's data and daemon.log, and
the summary as summary.json — and prints where; a passing run removes it unless --keep. A
failing run is replayed with the same --seed (the schedule and the operations are the same;
timing is not, so replay shows the same faults in the same order).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.chaos.checker import FileKeyModel, check_partitioned, summarise
from bench.chaos import crosscheck, record
from bench.chaos.diskfaults import POWER_MODES
from bench.chaos.faultfs import fuse_available
from bench.chaos.nemesis import (DEAD_AFTER, LEADER_FAULTS, WHOLE_CLUSTER_POWER_LOSS, Nemesis,
                                 master_kills)
from bench.chaos.history import export_porcupine
from bench.chaos.netns import NetLab, NetLabUnavailable
from bench.chaos.workload import Workload
from bench.common import percentile, table
from cli.localcluster import LocalCluster
from gfs.errors import GfsError
from gfs.planted import ALLOW_VALUE, BUGS, ENV_ALLOW, ENV_BUG

log = logging.getLogger("chaos")

ELECTION = 0.3
WORKLOAD_USER = "chaos"


def start_cluster(base: Path, masters: int, chunkservers: int, use_netns: bool,
                  capacity: str = "2GiB", faultfs: bool = True):
    """The run's cluster (TLS on; masters on their own test hosts when namespaces can be made;
    with `faultfs`, every daemon's data on its own FaultFS mount)."""
    lab = None
    hosts = None
    if use_netns:
        try:
            lab = NetLab(masters)
            hosts = [(addr, lab.exec_prefix(i)) for i, addr in enumerate(lab.addresses)]
        except NetLabUnavailable as err:
            print(f"chaos: partitions disabled: {err}", flush=True)
    # Chunkservers listen on the bridge's address so that masters inside their namespaces can
    # reach them too (the leader calls CopyChunk on them for repairs).
    # A capacity per chunkserver and a low balancing threshold keep the balancer moving chunks
    # during the run (a server back from a long outage is far emptier than the others).
    cluster = LocalCluster(base / "cluster", host=lab.gateway if lab else "127.0.0.1")
    cluster.create(masters=masters, chunkservers=chunkservers, master_hosts=hosts, tls=True,
                   faultfs=faultfs, options={
        # Small files inline in the metadata, as the masters store them by default (explicit:
        # the test suite turns inline files off for the tests that need small files in chunks).
        "master": {"election-timeout": ELECTION, "chunk-size": "1MiB", "dead-after": DEAD_AFTER,
                   "inline-max": "64KiB", "compact-entries": 2000, "balance-threshold": 1,
                   "balance-rate": "0", "balance-concurrency": 2},
        "chunkserver": {"heartbeat-interval": 0.5, "scrub-rate": "8MiB",
                        "scrub-interval": 10, "capacity": capacity}})
    for m in cluster.spec["masters"]:          # the nemesis moves their wall clocks
        clock_file = str(Path(m["data"]) / "test-clock")
        cluster.set_daemon_options(m["name"], {"test-clock-file": clock_file})
    if faultfs:                                # a power loss cuts every disk (FaultFS)
        os.environ.pop("GFS_TRACE_SYNCED", None)
    else:                                      # inherited by the daemons: the journal-only cut
        os.environ["GFS_TRACE_SYNCED"] = "1"
    try:
        cluster.up(timeout=120)           # daemons on FaultFS start slowly on a loaded machine
    except BaseException:                 # never leave daemons, mounts or namespaces behind
        cluster.down()
        if lab is not None:
            lab.teardown()
        raise
    return cluster, lab


def workload_identity(cluster: LocalCluster) -> dict:
    """The workload's credentials: a user of its own and a token narrowed to what it does in
    that user's namespace (the administrator's token stays with the harness)."""
    with cluster.client(deadline=60) as admin:
        admin.user_add(WORKLOAD_USER)
        token, _ = admin.token_create("chaos-workload", scopes=[
            f"storage.{WORKLOAD_USER}.files:read,list,write,delete"])
    return {"token": token, "tls_ca": cluster.tls.ca}


def restart_with_planted_bug(cluster: LocalCluster, bug: str) -> None:
    """Switch a planted bug on in every daemon (test only: the environment they inherit)."""
    os.environ[ENV_BUG], os.environ[ENV_ALLOW] = bug, ALLOW_VALUE
    for d in cluster.daemons():
        cluster.stop(d["name"])
    for d in cluster.daemons():
        cluster.start(d["name"])
    cluster.wait_healthy(60)
    print(f"chaos: planted bug {bug} switched on in every daemon", flush=True)


def final_reads(workload: Workload) -> list[str]:
    """After healing: read every key once more, as ordinary operations in the history. Each
    must answer (a value or NOT_FOUND): a key whose chunk was lost fails its read, which the
    linearizability check alone would take as an unknown outcome. Returns the keys that did
    not answer."""
    unanswered = []
    with workload.client(deadline=60) as c:
        for key in workload.keys:
            op = workload.run_lin_op(c, process=10_000, key=key, f="read", value=None)
            if op.status != "ok":
                unanswered.append(f"{key}: unreadable after healing: {op.output}")
    return unanswered


def check_blobs(workload: Workload, cluster: LocalCluster) -> list[str]:
    """Every acknowledged put reads back byte-identical; acknowledged deletes and renames hold.
    A blob whose rename has an unknown outcome must read back under one of its two names, one
    whose delete has an unknown outcome must read back right if it is still there."""
    lost = []
    b = workload.blobs
    with cluster.client(deadline=60) as c:
        for name, (size, digest) in sorted(b.acked.items()):
            if name in b.deleted:
                if c.exists(name):
                    lost.append(f"{name}: deleted (acknowledged) but still there")
                continue
            if name in b.maybe_moved:
                names = [name, b.maybe_moved[name]]
                found = [n for n in names if c.exists(n)]
                if not found:
                    lost.append(f"{name}: acknowledged put gone (under both names of a rename "
                                f"with an unknown outcome)")
                    continue
                name = found[0]
            elif name in b.maybe_deleted:
                if not c.exists(name):
                    continue                     # the delete may have happened
            elif name in b.uncertain:
                continue
            problem = _read_back(c, name, size, digest)
            if problem:
                lost.append(f"{name}: {problem}")
    return lost


def _read_back(c, name: str, size: int, digest: str) -> str | None:
    """What is wrong with blob `name` (None: it reads back with `size` bytes and `digest`)."""
    try:
        data = c.read(name)
    except GfsError as err:
        return f"acknowledged put unreadable: {err.code} {err}"
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        return "acknowledged put reads back different bytes"
    return None


def wait_full_redundancy(cluster: LocalCluster, timeout: float = 120.0) -> dict:
    """After healing: how long until the leader reports every chunk back at full redundancy
    (dead servers back, nothing under-replicated or known corrupt, no copy running)."""
    start = time.monotonic()
    health: dict = {}
    with cluster.client(deadline=30) as c:
        while time.monotonic() - start < timeout:
            try:
                health = c.health()
            except GfsError:
                health = {}
            if health.get("status") == "healthy" and not health.get("repair_in_flight"):
                return {"seconds": time.monotonic() - start, "health": health,
                        "balance": c.balance_status()}
            time.sleep(0.5)
    return {"seconds": None, "health": health, "balance": {}}


def count_balance_moves(cluster: LocalCluster) -> int:
    """Balancing moves completed by every leader of the run (from the masters' JSON logs)."""
    moves = 0
    for m in cluster.spec["masters"]:
        log_path = Path(m["data"]) / "daemon.log"
        if log_path.exists():
            with open(log_path, errors="replace") as f:
                moves += sum(1 for line in f if '"moved chunk ' in line and " from " in line)
    return moves


def failover_times(workload: Workload, faults) -> dict[str, list[float]]:
    """Per leader-fault kind: fault -> first write that started after it and was acknowledged."""
    writes = sorted((op.complete, op.invoke) for op in workload.history
                    if op.status == "ok" and op.f in ("write", "write_tmp", "create", "rename",
                                                      "delete") and op.complete is not None)
    out: dict[str, list[float]] = {}
    for f in faults:
        if f.kind in LEADER_FAULTS:
            after = [done for done, began in writes if began >= f.start]
            if after:
                out.setdefault(f.kind, []).append(min(after) - f.start)
    return out


def spread(values: list[float]) -> dict:
    return {"count": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else float("nan")}


def run(minutes: float, seed: int, masters: int, chunkservers: int, threads: int,
        use_netns: bool = True, workdir: str | None = None, keep: bool = False,
        capacity: str = "2GiB", first_kinds: list[str] | None = None,
        planted_bug: str | None = None, faultfs: bool | None = None,
        power_modes: tuple[str, ...] = POWER_MODES, puts_before_faults: int = 0) -> dict:
    """One chaos run; its summary. `first_kinds`: fault kinds injected first (then the
    shuffled deck), so a short run surely samples them. `planted_bug` (gfs/planted.py): once
    the cluster is set up, every daemon is restarted with that bug switched on — the run is
    expected to FAIL. `faultfs` (default: when FUSE is available): the daemons run on FaultFS,
    so power losses (in one of `power_modes`) cut every byte not made durable, and the disk
    faults join in. `puts_before_faults`: the first fault waits (up to 2 minutes) until that many
    puts of data were acknowledged (a planted bug must have had something to break)."""
    if faultfs is None:
        faultfs = fuse_available()
    base = Path(workdir or tempfile.mkdtemp(prefix="gfs-chaos-"))
    print(f"chaos: seed {seed}, {minutes:g} min, {masters} masters, {chunkservers} chunkservers, "
          f"{threads} clients, {'on FaultFS' if faultfs else 'journal-only power loss'}, "
          f"in {base}", flush=True)
    cluster, lab = start_cluster(base, masters, chunkservers, use_netns, capacity, faultfs)
    workload = None
    rng = random.Random(seed)
    try:
        workload = Workload(cluster.master_addresses(), seed, threads=threads,
                            root=f"/{WORKLOAD_USER}", client_kwargs=workload_identity(cluster))
        nemesis = Nemesis(cluster, lab, seed, workload.now, ELECTION, first=first_kinds,
                          power_modes=power_modes)
        workload.prepare()
        if planted_bug:
            restart_with_planted_bug(cluster, planted_bug)
        fault_seconds, unreadable = _run_faults(cluster, workload, nemesis, rng, minutes,
                                                puts_before_faults)
        lost = unreadable + check_blobs(workload, cluster)
        # A run that lost data has failed already; lost chunks never come back to full
        # redundancy, so it does not wait the whole 2 minutes to say so.
        redundancy = wait_full_redundancy(cluster, 30 if lost else 120)
    except BaseException:
        print(f"chaos: the run stopped with an error; {kept_message(base, cluster)}", flush=True)
        save_master_stacks(cluster)
        raise
    finally:
        for name in (ENV_BUG, ENV_ALLOW):
            os.environ.pop(name, None)
        if workload is not None:
            workload.stop()
        cluster.down()
        if lab is not None:
            lab.teardown()
    summary = summarise_run(workload, nemesis, lab, cluster, seed, minutes, lost, redundancy)
    summary["fault_seconds"] = round(fault_seconds, 1)
    summary["planted_bug"] = planted_bug
    out = Path(__file__).resolve().parent.parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"chaos-{seed}.json").write_text(json.dumps({
        "summary": summary, "faults": [dataclasses.asdict(f) for f in nemesis.faults],
        "history": [dataclasses.asdict(o) for o in workload.history]}, default=str))
    export_porcupine(workload.history, out / f"chaos-{seed}.porcupine.json")
    keep_or_clean(base, cluster, summary, keep)
    return summary


def keep_or_clean(base: Path, cluster: LocalCluster, summary: dict, keep: bool) -> None:
    """A failed run keeps its directory (summary.json written into it, summary["kept"] set,
    and where it is printed); a passing one is removed unless `keep`."""
    failed = failures(summary)
    if failed:
        summary["kept"] = str(base)
        (base / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print(f"chaos: FAILED ({'; '.join(failed)}); {kept_message(base, cluster)}", flush=True)
    elif not keep:
        shutil.rmtree(base, ignore_errors=True)


def save_master_stacks(cluster: LocalCluster) -> None:
    """A run that stopped with an error is often a master that stopped making progress: keep
    every running master's thread stacks (py-spy, with locals) in `stacks.txt` beside its
    daemon log, taken before the cluster is stopped."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return
    for d in cluster.daemons():
        pid = d["name"].startswith("master") and cluster.pid(d["name"])
        if not pid:
            continue
        try:
            out = subprocess.run([str(py_spy), "dump", "--locals", "--pid", str(pid)],
                                 capture_output=True, text=True, timeout=30)
            (Path(d["data"]) / "stacks.txt").write_text(out.stdout + out.stderr)
        except (OSError, subprocess.TimeoutExpired) as err:
            print(f"chaos: no stacks of {d['name']}: {err}", flush=True)


def kept_message(base: Path, cluster: LocalCluster) -> str:
    """Where a failed run's cluster and daemon logs are (they are kept for diagnosis)."""
    logs = [str(Path(d["data"]) / "daemon.log") for d in cluster.daemons()]
    return (f"kept for diagnosis in {base}: the cluster's data under {base / 'cluster'}, "
            f"daemon logs " + ", ".join(logs))


def failures(s: dict) -> list[str]:
    """The checks a run failed (empty: it passed)."""
    out = []
    if s["lost"]:
        out.append(f"{s['lost']} acknowledged operations lost")
    if s.get("unclean_errors"):
        out.append(f"{s['unclean_errors']} operations ended in an unclean error")
    if not s["linearizable"]:
        out.append("not linearizable")
    if s["full_redundancy_s"] is None:
        out.append("full redundancy not reached after healing")
    return out


def _run_faults(cluster: LocalCluster, workload: Workload, nemesis: Nemesis,
                rng: random.Random, minutes: float,
                puts_before_faults: int = 0) -> tuple[float, list[str]]:
    """The workload under the nemesis for `minutes`, then healing and the final reads;
    returns the seconds spent under faults and the keys unreadable after healing."""
    workload.start()
    if puts_before_faults:
        done = workload.wait_stored_puts(puts_before_faults, 120)
        print(f"chaos: {done} puts of data acknowledged before the first fault", flush=True)
    began = time.monotonic()
    end = began + minutes * 60
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.0, 3.0))
        fault = nemesis.inject()
        print(f"chaos: t={fault.start:6.1f}s {fault.kind} {','.join(fault.targets)}",
              flush=True)
        cluster.wait_healthy(60)
    workload.stop()
    under_faults = time.monotonic() - began
    nemesis.heal_all()
    cluster.wait_healthy(60)
    return under_faults, final_reads(workload)


def summarise_run(workload: Workload, nemesis: Nemesis, lab, cluster: LocalCluster, seed: int,
                  minutes: float, lost: list[str], redundancy: dict) -> dict:
    results = check_partitioned(workload.history, FileKeyModel(), max_seconds_per_key=60)
    lin = summarise(results)
    violations = [dataclasses.asdict(r) for r in results if r.linearizable is not True]
    wrong_reads = workload.counts.get("blob_get:WRONG_BYTES", 0)
    fo = failover_times(workload, nemesis.faults)
    counted = {k: v for k, v in workload.counts.items() if not k.endswith("WRONG_BYTES")}
    return {
        "seed": seed, "minutes": minutes, "operations": sum(counted.values()),
        "acknowledged": sum(v for k, v in counted.items() if k.split(":")[1] == "ok"),
        "lost": len(lost) + wrong_reads, "lost_detail": lost[:20],
        "linearizable": lin["linearizable"], "linearizability": lin,
        "violations": violations[:5],
        "unclean_errors": len(workload.unclean), "unclean_detail": workload.unclean[:10],
        "faultfs": bool(cluster.spec.get("faultfs")),
        "disk_faults": [dataclasses.asdict(f) for f in nemesis.faults if f.detail][:200],
        "faults": {k: sum(1 for f in nemesis.faults if f.kind == k) for k in nemesis.kinds},
        "master_kills": master_kills(nemesis.faults),
        "whole_cluster_power_losses": sum(1 for f in nemesis.faults
                                          if f.kind in WHOLE_CLUSTER_POWER_LOSS),
        "failover_s": spread([t for ts in fo.values() for t in ts]),
        "failover_by_kind_s": {k: spread(v) for k, v in sorted(fo.items())},
        "counts": dict(sorted(workload.counts.items())),
        "partitions": lab is not None,
        "security": "auth + TLS (workload: a token narrowed to its user's files)"
                    if cluster.tls else "auth",
        "full_redundancy_s": redundancy["seconds"],
        "final_health": redundancy["health"],
        "final_balance": {k: v for k, v in redundancy["balance"].items() if k != "servers"},
        "balance_moves": count_balance_moves(cluster),
    }


def fault_rows(faults: dict[str, int], per_row: int = 4) -> list[list]:
    """The faults by kind, a few per table row."""
    items = [f"{k} {v}" for k, v in faults.items() if v]
    rows = [items[i:i + per_row] for i in range(0, len(items), per_row)] or [[]]
    return [["faults" if i == 0 else "", ", ".join(r)] for i, r in enumerate(rows)]


def report(s: dict) -> str:
    fo = s["failover_s"]
    rows = [["operations", s["operations"]], ["acknowledged", s["acknowledged"]],
            ["lost (must be 0)", s["lost"]], ["linearizable", "yes" if s["linearizable"] else "NO"],
            ["keys checked / ops", f"{s['linearizability']['keys']} / {s['linearizability']['ops']}"],
            *fault_rows(s["faults"]),
            ["master kills / whole-cluster power losses",
             f"{s['master_kills']} / {s['whole_cluster_power_losses']}"],
            ["failover p50 / p99 / max (s)", f"{fo['p50']:.2f} / {fo['p99']:.2f} / {fo['max']:.2f} "
                                             f"({fo['count']} leader faults)"]]
    rows += [[f"  after {k}", f"{v['p50']:.2f} / {v['p99']:.2f} / {v['max']:.2f} ({v['count']})"]
             for k, v in s["failover_by_kind_s"].items()]
    healed = s["full_redundancy_s"]
    h = s["final_health"] or {}
    rows += [["full redundancy after healing", "NOT reached" if healed is None else
              f"{healed:.1f} s ({h.get('repaired', 0)} repair copies by the last leader)"]]
    b = s.get("final_balance") or {}
    if b:
        rows += [["balancing", f"{s['balance_moves']} moves in the run; at the end "
                               f"{b['state']}, spread {b['spread'] * 100:.1f} points"]]
    modes: dict[str, int] = {}
    for f in s.get("disk_faults", []):
        if "mode" in f["detail"]:
            modes[f["detail"]["mode"]] = modes.get(f["detail"]["mode"], 0) + 1
    rows += [["disks", "FaultFS: power loss of every unsynced byte ("
              + ", ".join(f"{m} {n}" for m, n in sorted(modes.items())) + "), disk faults"
              if s.get("faultfs") else "bare (power loss: the masters' journals only)"],
             ["unclean errors (must be 0)", s.get("unclean_errors", 0)],
             ["partitions (netns)", "yes" if s["partitions"]
              else "no (--no-netns, or no namespaces here: the log says why)"],
             ["security", s["security"]],
             *([["PLANTED BUG (test only)", s["planted_bug"]]] if s.get("planted_bug") else []),
             ["seed", s["seed"]]]
    return table(["chaos summary", ""], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--hours", type=float, default=None,
                    help="a long run: a campaign of --segment-minutes runs appended to "
                         "bench/results/chaos-record.json; the same command resumes it")
    ap.add_argument("--segment-minutes", type=float, default=10.0)
    ap.add_argument("--cross-check-every", type=int, default=4, metavar="K",
                    help="with --hours: cross-check segments 1, 1+K, 1+2K, ... with porcupine "
                         f"(the checker: --checker or ${crosscheck.ENV_CHECKER}; 0: none)")
    ap.add_argument("--checker", default=None,
                    help="the porcupine checker binary (bench/chaos/porcupine; docs/chaos.md)")
    ap.add_argument("--record", action="store_true",
                    help="append this --minutes run to the record too")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--masters", type=int, choices=[3, 5], default=3)
    ap.add_argument("--chunkservers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--no-netns", action="store_true", help="no partitions (no namespaces)")
    ap.add_argument("--no-faultfs", action="store_true",
                    help="daemons on the bare disk: no disk faults, and a power loss cuts only "
                         "the masters' journals (the default runs them on FaultFS when FUSE "
                         "is available)")
    ap.add_argument("--keep", action="store_true", help="keep the cluster's data and logs")
    ap.add_argument("--planted-bug", choices=sorted(BUGS), default=None,
                    help="TEST ONLY: switch this deliberately broken behaviour on in every "
                         "daemon after setup; the run must fail")
    ap.add_argument("--capacity", default="2GiB",
                    help="--capacity of each chunkserver (smaller: the cluster fills up sooner, "
                         "and space pressure, the repair reserve and cluster-full errors join in)")
    a = ap.parse_args(argv)
    def one(minutes: float, seed: int) -> dict:
        s = run(minutes, seed, a.masters, a.chunkservers, a.clients, not a.no_netns,
                keep=a.keep, capacity=a.capacity, planted_bug=a.planted_bug,
                faultfs=False if a.no_faultfs else None)
        print(report(s), flush=True)
        return s

    if a.hours is not None:
        cross_check = None
        if crosscheck.checker_path(a.checker) is not None:
            try:     # configured but unusable: say so now, not after hours of chaos
                checker = crosscheck.require_checker(a.checker)
            except crosscheck.CrossCheckError as err:
                print(f"chaos: {err}", file=sys.stderr)
                return 2
            cross_check = crosscheck.segment_cross_check(checker)
        return record.campaign(a.hours, a.segment_minutes, a.seed, one,
                               cross_check=cross_check, cross_check_every=a.cross_check_every)
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    s = one(a.minutes, seed)
    if a.record:
        record.add_run(s)
    if failures(s):
        print(json.dumps({"lost": s["lost_detail"], "violations": s["violations"],
                          "final_health": s["final_health"]}, indent=2, default=str))
        print(f"chaos: FAILED — replay with --seed {seed}; the cluster's data and every daemon "
              f"log are kept in {s['kept']}")
        return 1
    return 0


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    sys.exit(main())
