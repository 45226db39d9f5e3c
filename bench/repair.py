"""Repair benchmark: how fast the cluster gets back to full redundancy after a chunkserver that
holds several GiB is killed, and what a concurrent reader keeps of its throughput meanwhile —
beside the raw disk write rate measured in the same run.

    ./run.sh bench repair [--size 4GiB] [--chunkservers 4] [--configs 2:0,4:0,4:100MiB]
                          [--data DIR]

Steps: 3 masters and N chunkservers start; --size bytes are put with replication 3 (files of
256 MiB); a reader process reads its own 256 MiB file in a loop, first alone (unloaded MB/s),
then while the chunkserver holding the most chunks is killed with SIGKILL and its replicas are
re-created elsewhere. Reported: time from the kill to the death verdict (--dead-after) and to
full redundancy, MB/s re-replicated (bytes the dead server held / time from the verdict to full
redundancy), the reader's MB/s during the repair as a fraction of its unloaded MB/s, and peak
RSS of every daemon. Each --configs entry (repair concurrency : rate cap) gets a fresh
cluster, so the settings compare side by side in one run. 1 MB = 10^6 bytes.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import median, save_results, table
from bench.datapath import MB, PIECE, process_stats, raw_disk

FILE_SIZE = 256 << 20
DEAD_AFTER = 5.0


def _reader(masters: list[str], path: str, stop, out) -> None:
    """Read `path` again and again; report (start, end, bytes) of every whole read."""
    from gfs.client import Client

    class Discard(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            return len(b)

    with Client(masters, deadline=120) as c:
        while not stop.is_set():
            t = time.monotonic()
            n = c.get(path, Discard())
            out.put((t, time.monotonic(), n))


def reader_mb_s(reads: list[tuple[float, float, int]], start: float, end: float) -> float:
    """MB/s of the reads that ran entirely inside [start, end]."""
    inside = [(a, b, n) for a, b, n in reads if a >= start and b <= end]
    busy = sum(b - a for a, b, _ in inside)
    return sum(n for _, _, n in inside) / busy / MB if busy else float("nan")


def _drain(q, into: list) -> None:
    while True:
        try:
            into.append(q.get_nowait())
        except queue.Empty:
            return


def fill(client, size: int, work: str) -> list[str]:
    """Put `size` bytes as files of FILE_SIZE (each a random 1 MiB piece pattern)."""
    paths = []
    piece = os.urandom(PIECE)
    for i in range(max(1, size // FILE_SIZE)):
        src = os.path.join(work, "fill.bin")
        with open(src, "wb") as f:
            for j in range(FILE_SIZE // PIECE):
                f.write(piece[:8] + j.to_bytes(8, "little") + i.to_bytes(8, "little") + piece[24:])
        client.put(src, f"/fill/{i}", replication=3)
        paths.append(f"/fill/{i}")
        os.unlink(src)
    return paths


def held_bytes(cluster, name: str) -> int:
    d = Path(cluster.daemon(name)["data"]) / "hot"
    return sum(p.stat().st_size for p in d.glob("*/*.chunk"))


def run(size: int, n_chunkservers: int, concurrency: int, rate: int, data_dir: str | None) -> dict:
    from cli.localcluster import LocalCluster
    from gfs.client import Client
    base = tempfile.mkdtemp(prefix="gfs-bench-repair-", dir=data_dir)
    started = time.monotonic()
    ctx = mp.get_context("spawn")
    try:
        print(f"  raw disk write (1 GiB) in {base}", flush=True)
        disk = [raw_disk(base, 1 << 30)["write"] for _ in range(3)]
        cluster = LocalCluster(os.path.join(base, "cluster"))
        opts = {"master": {"dead-after": DEAD_AFTER, "repair-concurrency": concurrency,
                           "repair-rate": rate},
                "chunkserver": {"heartbeat-interval": 0.5, "scrub-rate": 0}}
        try:
            cluster.create(masters=3, chunkservers=n_chunkservers, options=opts)
            cluster.up()
            with cluster.signed_in():   # clients here and in the reader process
                masters = cluster.master_addresses()
                with Client(masters, deadline=120) as c:
                    c.mkdir("/fill")
                    print(f"  filling {size / MB:.0f} MB with replication 3", flush=True)
                    t = time.monotonic()
                    fill(c, size, base)
                    fill_s = time.monotonic() - t
                    reader_src = os.path.join(base, "reader.bin")
                    with open(reader_src, "wb") as f:
                        for _ in range(FILE_SIZE // PIECE):
                            f.write(os.urandom(PIECE))
                    c.put(reader_src, "/reader", replication=3)
                    os.unlink(reader_src)
                    _wait(lambda: c.health()["status"] == "healthy", 60)
                    names = [cs["name"] for cs in cluster.spec["chunkservers"]]
                    held = {n: held_bytes(cluster, n) for n in names}
                    victim = max(held, key=held.get)
                    stop, q = ctx.Event(), ctx.Queue()
                    reader = ctx.Process(target=_reader, args=(masters, "/reader", stop, q),
                                         daemon=True)
                    reader.start()
                    reads: list = []
                    while len(reads) < 2:                   # connected and warm
                        reads.append(q.get(timeout=120))
                    t_unloaded = time.monotonic()
                    time.sleep(10)
                    t_kill = time.monotonic()
                    cluster.kill(victim)
                    timeline = []
                    t_dead = t_full = None
                    while time.monotonic() - t_kill < 3600:
                        h = c.health()
                        now = time.monotonic()
                        timeline.append({"t": now - t_kill,
                                         "under_replicated": h["under_replicated"],
                                         "bytes_pending": h["repair_bytes_pending"],
                                         "rate": h["repair_rate_bytes_s"], "eta_s": h["eta_s"]})
                        if t_dead is None and h["dead"]:
                            t_dead = now
                        if t_dead is not None and h["under_replicated"] == 0 and h["chunks"]:
                            t_full = now
                            break
                        time.sleep(0.25)
                    stop.set()
                    reader.join(timeout=120)
                    _drain(q, reads)
                    procs = {d["name"]: process_stats(cluster.pid(d["name"]))
                             for d in cluster.daemons() if d["name"] != victim}
                    final = c.health()
        finally:
            cluster.down()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    repair_s = (t_full - t_dead) if t_full and t_dead else float("nan")
    unloaded = reader_mb_s(reads, t_unloaded, t_kill)
    during = reader_mb_s(reads, t_dead or t_kill, t_full or time.monotonic())
    return {"size": size, "chunkservers": n_chunkservers, "concurrency": concurrency,
            "rate_limit": rate, "fill_mb_s": size / fill_s / MB, "disk_write_mb_s": median(disk),
            "victim_bytes": held[victim], "detect_s": (t_dead or t_kill) - t_kill,
            "repair_s": repair_s, "full_redundancy_s": (t_full or float("nan")) - t_kill,
            "repair_mb_s": held[victim] / repair_s / MB, "reader_unloaded_mb_s": unloaded,
            "reader_during_mb_s": during, "repaired": final["repaired"],
            "repair_failures": final["repair_failures"], "timeline": timeline,
            "processes": procs, "wall_s": time.monotonic() - started}


def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not become healthy")
        time.sleep(0.5)


def report(runs: list[dict]) -> str:
    disk = median([r["disk_write_mb_s"] for r in runs])
    rows = []
    for r in runs:
        limit = f"{r['rate_limit'] / MB:.0f} MB/s" if r["rate_limit"] else "none"
        rows.append([f"{r['concurrency']} / {limit}", f"{r['victim_bytes'] / MB:.0f}",
                     f"{r['repair_mb_s']:.0f}", f"{r['repair_mb_s'] / disk:.2f}",
                     f"{r['reader_during_mb_s']:.0f} / {r['reader_unloaded_mb_s']:.0f}",
                     f"{r['reader_during_mb_s'] / r['reader_unloaded_mb_s']:.2f}",
                     f"{r['detect_s']:.1f}", f"{r['full_redundancy_s']:.1f}",
                     f"{r['repaired']} / {r['repair_failures']}"])
    first = runs[0]
    head = (f"{first['chunkservers']} chunkservers, {first['size'] / MB:.0f} MB at replication 3; "
            f"one chunkserver killed (SIGKILL), declared dead after {DEAD_AFTER:.0f} s; "
            f"raw disk write (1 MiB writes + fdatasync) {disk:.0f} MB/s in the same run")
    result = table(["copies at once / rate cap", "lost MB", "repair MB/s", "× raw disk write",
                    "reader MB/s during / unloaded", "reader kept", "kill → dead s",
                    "kill → full redundancy s", "copies ok / failed"], rows)
    peaks = {}
    for r in runs:
        for name, st in r["processes"].items():
            seen = peaks.setdefault(name, {"peak_rss": None, "cpu_s": None})
            if st["peak_rss"] is not None:
                seen["peak_rss"] = max(seen["peak_rss"] or 0, st["peak_rss"])
    procs = table(["process", "peak RSS MiB"],
                  [[k, "?" if v["peak_rss"] is None else f"{v['peak_rss'] / (1 << 20):.0f}"]
                   for k, v in sorted(peaks.items())])
    return (f"{head}\n\n{result}\n\n{procs}\n\n"
            f"wall time {sum(r['wall_s'] for r in runs):.0f} s")


def main(argv: list[str] | None = None) -> None:
    from gfs.units import parse_size
    ap = argparse.ArgumentParser(prog="bench repair", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4GiB", help="data to store before the kill")
    ap.add_argument("--chunkservers", type=int, default=4)
    ap.add_argument("--configs", default="2:0,4:0,4:100MiB", metavar="C:RATE,...",
                    help="master --repair-concurrency:--repair-rate pairs, one fresh cluster "
                         "each (default: 2:0,4:0,4:100MiB; rate 0 = unthrottled)")
    ap.add_argument("--data", help="directory on the disk to use (default: a temp dir)")
    a = ap.parse_args(argv)
    configs = [(int(c), parse_size(r)) for c, r in
               (item.split(":", 1) for item in a.configs.split(","))]
    runs = []
    for concurrency, rate in configs:
        print(f"  repair with {concurrency} copies at once, rate cap {rate or 'none'}", flush=True)
        runs.append(run(parse_size(a.size), a.chunkservers, concurrency, rate, a.data))
    print(report(runs))
    print(f"results: {save_results('repair', {'runs': runs})}")


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main()
