"""A chunkserver holding many replicas registers with the master: how long its full report
takes (sent in pieces of GFS_REPORT_BATCH replicas, chunkserver/heartbeat.py), what it costs the
master in CPU, and what another client's metadata writes see meanwhile.

    PYTHONPATH=. python -m bench.report_scale [--replicas 200000] [--work /dev/shm/gfs-report]

Steps: one master starts (secure, as `gfs cluster up` does); a chunkserver's store is filled
with --replicas chunks of 4 KiB written by the store's own writer (ChunkStore.begin_write /
commit, with its fsyncs; the default work directory is on tmpfs so filling 200,000 chunks takes
minutes, not an hour — the figures measured are the report's, not the disk's); a probe client
makes directories one after another (each a Raft write) for --before seconds alone, then the
chunkserver starts and the probe goes on until its full report is in and --after seconds more.
Reported: store fill time, chunkserver start to serving (its store scan), serving to report
complete, pieces, the master's CPU seconds over registration, the chunkserver's CPU per second
while heartbeating afterwards, and the probe's p50/p99 latency alone, during registration and
after it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import percentile, process_stats

CHUNK_BYTES = 4096


def fill_store(root: str, replicas: int) -> float:
    """Write `replicas` chunks of CHUNK_BYTES into a ChunkStore at `root`; seconds taken."""
    from chunkserver.store import ChunkStore
    store = ChunkStore(root)
    payload = os.urandom(CHUNK_BYTES)
    t = time.monotonic()
    for handle in range(1, replicas + 1):
        w = store.begin_write(handle, 1)
        w.write(payload)
        w.commit()
    return time.monotonic() - t


def log_time(log: Path, needle: str) -> float | None:
    """The wall-clock time (epoch s) of the last log line containing `needle`."""
    found = None
    for line in log.read_text().splitlines():
        if needle in line:
            ts = json.loads(line)["ts"]
            found = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp()
    return found


def probe(client, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """mkdir one new directory after another; (wall time at start, seconds) of each."""
    i = 0
    while not stop.is_set():
        i += 1
        t0 = time.time()
        s = time.monotonic()
        client.mkdir(f"/probe/{i}")
        out.append((t0, time.monotonic() - s))


def stats(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 2) if ms else None,
            "p99_ms": round(percentile(ms, 99), 2) if ms else None,
            "max_ms": round(max(ms), 2) if ms else None}


def run(replicas: int, work: str, before: float, after: float) -> dict:
    from cli.localcluster import LocalCluster
    from gfs.client import Client
    shutil.rmtree(work, ignore_errors=True)
    cluster = LocalCluster(os.path.join(work, "cluster"))
    cluster.create(masters=1, chunkservers=0,
                   options={"chunkserver": {"heartbeat-interval": 1.0}})
    result: dict = {"replicas": replicas}
    with cluster.signed_in():
        cluster.up(timeout=60)
        try:
            name = cluster.add_chunkserver()
            cs = cluster.daemon(name)
            result["fill_s"] = round(fill_store(cs["data"], replicas), 1)
            master_pid = cluster.pid(cluster.spec["masters"][0]["name"])
            with Client(cluster.master_addresses()) as client:
                client.mkdir("/probe")
                lat: list[tuple[float, float]] = []
                stop = threading.Event()
                th = threading.Thread(target=probe, args=(client, stop, lat), daemon=True)
                th.start()
                time.sleep(before)
                cpu0 = process_stats(master_pid)["cpu_s"]
                started = time.time()
                cluster.start(name)
                log = Path(cs["data"]) / "daemon.log"
                deadline = time.monotonic() + 1800
                while "full report of" not in log.read_text():
                    assert time.monotonic() < deadline, "no full report within 30 min"
                    time.sleep(0.2)
                done = time.time()
                cpu1 = process_stats(master_pid)["cpu_s"]
                cs_pid = cluster.pid(name)
                cs_cpu0 = process_stats(cs_pid)["cpu_s"]
                time.sleep(after)
                cs_cpu1 = process_stats(cs_pid)["cpu_s"]
                stop.set()
                th.join()
                serving = log_time(log, " serving ")
                text = log.read_text()
                line = next(json.loads(x)["msg"] for x in text.splitlines() if "full report of" in x)
                alive = [s for s in client.chunkservers() if s.get("alive")]
            result.update({
                "report": line,
                "start_to_serving_s": round(serving - started, 2),
                "serving_to_report_done_s": round(done - serving, 2),
                "master_cpu_s_during_registration": round(cpu1 - cpu0, 2),
                "registration_wall_s": round(done - started, 2),
                "chunkserver_cpu_per_s_after": round((cs_cpu1 - cs_cpu0) / after, 3),
                "alive_servers": len(alive),
                "probe_alone": stats([d for t, d in lat if t < started]),
                "probe_during": stats([d for t, d in lat if started <= t <= done]),
                "probe_after": stats([d for t, d in lat if t > done]),
            })
        finally:
            cluster.down()
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=200_000)
    ap.add_argument("--work", default="/dev/shm/gfs-report-scale")
    ap.add_argument("--before", type=float, default=5.0, help="probe alone, seconds")
    ap.add_argument("--after", type=float, default=10.0, help="heartbeats after, seconds")
    a = ap.parse_args()
    print(json.dumps(run(a.replicas, a.work, a.before, a.after), indent=2))


if __name__ == "__main__":
    main()
