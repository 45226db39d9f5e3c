"""A chunkserver holding many replicas registers with the master: how long its full report
takes (sent in pieces of GFS_REPORT_BATCH replicas, chunkserver/heartbeat.py), what it costs the
master in CPU, and what another client's metadata requests see meanwhile and for minutes after.

    PYTHONPATH=. python -m bench.report_scale [--replicas 200000] [--work /dev/shm/gfs-report]
        [--before 20] [--after 180] [--window 10] [--template /dev/shm/gfs-report-store]
        [--logs DIR]

Steps: one master starts (secure, as `gfs cluster up` does); a chunkserver's store is filled
with --replicas chunks of 4 KiB written by the store's own writer (ChunkStore.begin_write /
commit, with its fsyncs; the default work directory is on tmpfs so filling 200,000 chunks takes
minutes, not an hour — the figures measured are the report's, not the disk's). With --template
the filled store is kept in that directory and hard-linked into the next run's chunkserver
(filled again only when its chunk count differs). None of the chunks belongs to a file: they are
the "unknown replicas" a leader must not rescan for ever (issue 15; master/orphans.py). A probe
client makes a directory and stats it, one after another (a Raft write and a linearizable read),
for --before seconds alone, then the chunkserver starts and the probe goes on until its full
report is in and --after seconds more.
Reported: store fill time, chunkserver start to serving (its store scan), serving to report
complete, pieces, the master's CPU seconds over registration, the master's CPU per second
alone (probe only) and after registration, the chunkserver's CPU per second while heartbeating
afterwards, the probe's mkdir and stat p50/p99 alone, during registration and after it, and a
timeline of --window-second windows after registration (master CPU, mkdir/stat p50/p99).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import subprocess
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


def store_from_template(template: str, data: str, replicas: int) -> float:
    """Hard-link a filled store (filled first if `template` does not hold `replicas` chunks)
    into `data`; seconds spent filling (0 when the template was reused)."""
    marker = Path(template) / ".replicas"
    fill_s = 0.0
    if not marker.exists() or marker.read_text() != str(replicas):
        shutil.rmtree(template, ignore_errors=True)
        fill_s = fill_store(template, replicas)
        marker.write_text(str(replicas))
    Path(data).mkdir(parents=True, exist_ok=True)
    for sub in ("hot", "cold"):
        if (Path(template) / sub).exists():
            subprocess.run(["cp", "-al", str(Path(template) / sub), data], check=True)
    return fill_s


def copy_logs(cluster, logs: str) -> None:
    """Copy every daemon's log of a LocalCluster into the directory `logs` (NAME.log)."""
    for d in cluster.daemons():
        log_file = Path(d["data"]) / "daemon.log"
        if log_file.exists():
            Path(logs).mkdir(parents=True, exist_ok=True)
            shutil.copy(log_file, Path(logs) / f"{d['name']}.log")


def probe(client, stop: threading.Event, out: list[tuple[float, float, float]]) -> None:
    """mkdir one new directory, then stat it, one after another; (wall time at start, mkdir
    seconds, stat seconds) of each."""
    i = 0
    while not stop.is_set():
        i += 1
        t0 = time.time()
        s = time.monotonic()
        client.mkdir(f"/probe/{i}")
        m = time.monotonic()
        client.stat(f"/probe/{i}")
        out.append((t0, m - s, time.monotonic() - m))


def cpu_sampler(pid: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """(wall time, CPU seconds so far) of process `pid`, every half second."""
    while not stop.wait(0.5):
        cpu = process_stats(pid)["cpu_s"]
        if cpu is not None:
            out.append((time.time(), cpu))


def cpu_per_s(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds per second between the samples nearest `start` and `end`."""
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 3)


def phase(lat: list[tuple[float, float, float]], cpu: list[tuple[float, float]], start: float,
          end: float) -> dict:
    """Probe latencies and master CPU between two wall times."""
    rows = [r for r in lat if start <= r[0] < end]
    return {"master_cpu_per_s": cpu_per_s(cpu, start, end),
            "mkdir": stats([r[1] for r in rows]), "stat": stats([r[2] for r in rows])}


def stats(samples: list[float]) -> dict:
    ms = [s * 1000 for s in samples]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 2) if ms else None,
            "p99_ms": round(percentile(ms, 99), 2) if ms else None,
            "max_ms": round(max(ms), 2) if ms else None}


def run(replicas: int, work: str, before: float, after: float, window: float = 10.0,
        template: str | None = None, logs: str | None = None) -> dict:
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
            fill = (store_from_template(template, cs["data"], replicas) if template
                    else fill_store(cs["data"], replicas))
            result["fill_s"] = round(fill, 1)
            master_pid = cluster.pid(cluster.spec["masters"][0]["name"])
            with Client(cluster.master_addresses()) as client:
                client.mkdir("/probe")
                lat: list[tuple[float, float, float]] = []
                cpu: list[tuple[float, float]] = []
                stop = threading.Event()
                threads = [threading.Thread(target=probe, args=(client, stop, lat), daemon=True),
                           threading.Thread(target=cpu_sampler, args=(master_pid, stop, cpu),
                                            daemon=True)]
                for th in threads:
                    th.start()
                alone_from = time.time()
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
                for th in threads:
                    th.join()
                serving = log_time(log, " serving ")
                text = log.read_text()
                line = next(json.loads(x)["msg"] for x in text.splitlines() if "full report of" in x)
                alive = [s for s in client.chunkservers() if s.get("alive")]
                t = time.monotonic()
                try:                  # the leader's health survey, itself a metadata request
                    health: dict = client.health()
                except Exception as err:   # noqa: BLE001 - reported, not fatal to the run
                    health = {"error": str(err).split(":")[0]}
                health_s = time.monotonic() - t
            end = done + after
            result.update({
                "report": line,
                "start_to_serving_s": round(serving - started, 2),
                "serving_to_report_done_s": round(done - serving, 2),
                "master_cpu_s_during_registration": round(cpu1 - cpu0, 2),
                "registration_wall_s": round(done - started, 2),
                "chunkserver_cpu_per_s_after": round((cs_cpu1 - cs_cpu0) / after, 3),
                "alive_servers": len(alive),
                "health_s": round(health_s, 2),
                "health": {k: health.get(k) for k in ("orphan_replicas", "error") if k in health},
                "alone": phase(lat, cpu, alone_from, started),
                "during": phase(lat, cpu, serving, done),
                "after": phase(lat, cpu, done, end),
                "timeline_after": [dict(from_s=round(t - done), **phase(lat, cpu, t, t + window))
                                   for t in [done + i * window for i in range(int(after // window))]],
            })
        finally:
            cluster.down()
            if logs:
                copy_logs(cluster, logs)
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=200_000)
    ap.add_argument("--work", default="/dev/shm/gfs-report-scale")
    ap.add_argument("--before", type=float, default=20.0, help="probe alone, seconds")
    ap.add_argument("--after", type=float, default=180.0, help="heartbeats after, seconds")
    ap.add_argument("--window", type=float, default=10.0, help="timeline window, seconds")
    ap.add_argument("--template", default=None,
                    help="keep the filled store here and hard-link it into each run")
    ap.add_argument("--logs", default=None, help="copy the daemons' logs here at the end")
    a = ap.parse_args()
    print(json.dumps(run(a.replicas, a.work, a.before, a.after, a.window, a.template, a.logs),
                     indent=2))


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main()
