"""The masters with a namespace of N files (issue 15, Scale): RSS, restart, a wiped follower
catching up by snapshot, listing a directory of N entries, and `rm -r` + trash purge of it — each
while another client keeps committing small creates, whose latency is reported per phase.

    PYTHONPATH=. python -m bench.namespace_scale --files 1000000 [--work /tmp/nsscale-work]
        [--template /tmp/nsscale-template] [--window 15] [--compact-entries 1000]
        [--out bench/results] [--logs DIR]

Seeding (the fastest honest way): the API creates ~1-2k files/s here, so N files are built
once, offline, by the masters' own apply code — `MetadataState.apply_batch`, the function the
Raft tick thread runs for every log entry, with `put_inline` commands of 1,000 empty committed
files per entry (bench/reap_scale.py `build`: /tree/d0/f0 .. f{N-1}, one directory) — into an
LMDB store, which is then written as a metadata backup file (gfs/backupfile.py, the format of
`gfs admin snapshot save`) and restored into each of the three masters' data directories with
the code of `gfs admin snapshot restore` (master/backup.py). The masters therefore start on the
same LMDB layout a live cluster writes, as a group restored from a backup: a new Raft log, the
files real entries of the real state machine. With --template the built store and backup are
kept and reused by the next run of the same N (rebuilt when N differs).

Then three real master daemons start (LocalCluster: real LMDB, real fsync, secure as
`gfs cluster up`; --compact-entries so the leader has a snapshot to send soon), and a probe
client makes one directory after another (`mkdir /probe/I`: one Raft command, committed and
applied on a quorum) for the whole run. Phases, in order:

1. start: time from starting the three daemons until a leader with quorum serves the
   administrator; each master's RSS then.
2. baseline: the probe alone for --window seconds.
3. catch-up: a follower is killed (-9), its data directory wiped and restarted; it must get the
   leader's snapshot ("until a snapshot", the wait for the leader's first one, is a phase of its
   own; a restored group writes one at its first start, so it is ~0 s now). Timed until its
   applied index reaches the leader's commit index at its restart.
4. leader restart: the leader is killed (-9); timed until a new leader with quorum serves a
   stat of the big directory; then the old leader restarts and is timed until caught up.
5. list: every page of the N-entry directory (1,000 names a page), timed page by page.
6. rm -r: `delete(/tree, recursive)` into the trash, timed.
7. purge: `trash purge` of it, timed, and then until the leader's reaper logs it is done.
8. after: the probe alone again for --window seconds.

Reported: every phase's duration and the probe's create latency (n, p50, p99, max, failures)
during it, the masters' snapshot writes and leader elections in each phase, each master's RSS
after start and its peak at the end, the listing's pages and per-page p50/p99, and the sizes of the store and
snapshot. A markdown table is printed; JSON and markdown go to --out — also when a phase fails
or the run is stopped (SIGTERM): then with what was measured and the error.
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
from bench.reap_scale import build
from bench.report_scale import copy_logs, log_time, stats

BIG_PARENT = "/tree"
BIG_DIR = "/tree/d0"          # reap_scale.build with per_dir = N puts every file here
PAGE = 1000


# --- seeding -----------------------------------------------------------------------------------

def build_backup(directory: str, files: int) -> dict:
    """Build a store of `files` files with the state machine's apply code and write it as a
    metadata backup file (DIRECTORY/namespace.backup); returns its path and timings."""
    from gfs import backupfile
    from master.state import MetadataState
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    store, backup = os.path.join(directory, "meta"), os.path.join(directory, "namespace.backup")
    t = time.monotonic()
    # sync=False: no fsync per entry while building (the bytes are the same); the restore
    # below writes every master's copy durably.
    with MetadataState(store, map_size=64 << 30, sync=False) as state:
        index = build(state, files, per_dir=files)
        build_s = time.monotonic() - t
        raw = os.path.join(directory, "data.copy")
        with open(raw, "wb") as f:
            state.copy_to_fd(f.fileno())
    size, sha = backupfile.digest_file(raw)
    with open(backup, "wb") as out, open(raw, "rb") as src:
        out.write(backupfile.header_bytes(backupfile.make_header(index, int(time.time() * 1000),
                                                                 size, sha)))
        shutil.copyfileobj(src, out, 1 << 20)
    os.unlink(raw)
    shutil.rmtree(store)
    Path(directory, ".files").write_text(str(files))
    return {"path": backup, "build_s": round(build_s, 1), "store_bytes": size,
            "total_s": round(time.monotonic() - t, 1)}


def backup_for(template: str, files: int) -> dict:
    """The backup of `files` files kept in `template` (built first unless it is there)."""
    marker = Path(template) / ".files"
    if marker.exists() and marker.read_text() == str(files):
        backup = os.path.join(template, "namespace.backup")
        return {"path": backup, "build_s": 0.0, "reused": True,
                "store_bytes": os.path.getsize(backup)}
    return build_backup(template, files)


# --- the probe ---------------------------------------------------------------------------------

class Probe:
    """Another client committing small creates one after another: (wall start, seconds, ok)."""

    def __init__(self, client) -> None:
        self.client = client
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def start(self) -> None:
        self.client.mkdir("/probe")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            t0, s = time.time(), time.monotonic()
            try:
                self.client.mkdir(f"/probe/{i}")
                ok = True
            except Exception:      # noqa: BLE001 - a failed create is a figure, not a crash
                ok = False
            self.samples.append((t0, time.monotonic() - s, ok))
            if not ok:
                time.sleep(0.05)

    def between(self, start: float, end: float) -> dict:
        rows = [r for r in self.samples if start <= r[0] < end]
        out = stats([r[1] for r in rows if r[2]])
        out["failed"] = sum(1 for r in rows if not r[2])
        return out


# --- helpers -----------------------------------------------------------------------------------

def mib(n: int | None) -> float | None:
    return None if n is None else round(n / (1 << 20), 1)


def rss_now(pid: int | None) -> int | None:
    """Current RSS (VmRSS, bytes) of a process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, TypeError):
        return None


def log_times(log: Path, needle: str) -> list[float]:
    """Wall times (epoch s) of every line of a daemon log containing `needle`."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            ts = json.loads(line)["ts"]
            out.append(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp())
    return out


def wait_for(what: str, check, timeout: float, every: float = 0.1):
    """Poll `check()` until it returns something true; its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def stat_served(cluster, path: str):
    """A fresh client's stat of `path` (None while no leader serves it)."""
    try:
        with cluster.client(deadline=2.0) as c:
            return c.stat(path)
    except Exception:      # noqa: BLE001 - not served yet
        return None


def caught_up(cluster, m: dict, index: int) -> bool:
    st = cluster.master_status(m)
    return bool(st) and st["applied_index"] >= index


def list_all(client, path: str) -> dict:
    """Every page of `path`: total seconds, pages, entries, per-page p50/p99/max."""
    pages: list[float] = []
    entries, after = 0, ""
    t = time.monotonic()
    while True:
        s = time.monotonic()
        page, after = client.list_page(path, after, PAGE)
        pages.append(time.monotonic() - s)
        entries += len(page)
        if not after:
            break
    ms = [p * 1000 for p in pages]
    return {"total_s": round(time.monotonic() - t, 2), "pages": len(pages), "entries": entries,
            "page_p50_ms": round(percentile(ms, 50), 1),
            "page_p99_ms": round(percentile(ms, 99), 1),
            "page_max_ms": round(max(ms), 1)}


# --- the run -----------------------------------------------------------------------------------

def run(files: int, work: str, window: float = 15.0, compact_entries: int = 1000,
        template: str | None = None, timeout: float = 1800.0, logs: str | None = None,
        catch_up_timeout: float = 600.0) -> dict:
    from cli.localcluster import LocalCluster
    from master import backup as restore_backup
    started = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)
    seed = backup_for(template, files) if template else build_backup(
        os.path.join(work, "template"), files)
    cluster = LocalCluster(os.path.join(work, "cluster"))
    cluster.create(masters=3, chunkservers=0,
                   options={"master": {"compact-entries": compact_entries}})
    t = time.monotonic()
    for m in cluster.spec["masters"]:
        restore_backup.restore(seed["path"], cluster.data_path(m))
    seed["restore_s"] = round(time.monotonic() - t, 1)
    masters = {m["name"]: m for m in cluster.spec["masters"]}
    log = {name: Path(cluster.data_path(m)) / "daemon.log" for name, m in masters.items()}
    result: dict = {"files": files, "directory": BIG_DIR, "compact_entries": compact_entries,
                    "seed": {k: v for k, v in seed.items() if k != "path"}}
    phases: dict[str, tuple[float, float]] = {}
    figures: dict = {}
    with cluster.signed_in():
        try:
            t0 = time.monotonic()
            cluster.up(timeout=timeout)
            figures["start_s"] = round(time.monotonic() - t0, 2)
            figures["rss_after_start_mib"] = {n: mib(rss_now(cluster.pid(n))) for n in masters}
            with cluster.client() as client:
                probe = Probe(cluster.client())
                probe.start()
                try:
                    w = time.time()
                    time.sleep(window)
                    phases["baseline"] = (w, time.time())

                    figures["catch_up"] = follower_catch_up(cluster, masters, log, phases,
                                                            catch_up_timeout)
                    if figures["catch_up"]["s"] is not None:
                        figures["leader_restart"] = leader_restart(cluster, masters, phases,
                                                                   timeout)

                    w = time.time()
                    figures["list"] = list_all(client, BIG_DIR)
                    phases["list"] = (w, time.time())

                    w = time.time()
                    s = time.monotonic()
                    trash_id = client.delete(BIG_PARENT, recursive=True)
                    figures["rm_r_s"] = round(time.monotonic() - s, 4)
                    phases["rm -r"] = (w, time.time())

                    w = time.time()
                    s = time.monotonic()
                    client.trash_purge([trash_id])
                    figures["purge_call_s"] = round(time.monotonic() - s, 4)
                    leader = wait_for("a leader", cluster.leader, 60)
                    wait_for("the reaper's end", lambda: any(
                        t >= w for t in log_times(log[leader], "reaped ")), timeout, 0.5)
                    figures["purge_until_reaped_s"] = round(time.monotonic() - s, 2)
                    phases["purge + reap"] = (w, time.time())
                    figures["gone"] = stat_gone(client, BIG_PARENT)

                    w = time.time()
                    time.sleep(window)
                    phases["after"] = (w, time.time())
                except BaseException as exc:    # noqa: BLE001 - what was measured is still reported
                    figures["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    probe.stop()
                    probe.client.close()
            figures["rss_peak_mib"] = {n: mib(process_stats(cluster.pid(n))["peak_rss"])
                                       for n in masters}
            figures["rss_end_mib"] = {n: mib(rss_now(cluster.pid(n))) for n in masters}
            snaps = [x for n in masters for x in log_times(log[n], "snapshot written at index")]
            elected = [x for n in masters for x in log_times(log[n], "raft role is now leader")]
            result["phases"] = {
                name: {"s": round(end - start, 2), "creates": probe.between(start, end),
                       "snapshots_written": sum(1 for x in snaps if start <= x < end),
                       "leaders_elected": sum(1 for x in elected if start <= x < end)}
                for name, (start, end) in phases.items()}
            result["snapshot_bytes"] = max(
                (os.path.getsize(p) for p in (Path(cluster.data_path(m)) / "raft" / "snapshot.bin"
                                              for m in masters.values()) if p.exists()),
                default=None)
        finally:
            cluster.down()
            if logs:
                copy_logs(cluster, logs)
    result.update(figures)
    result["wall_s"] = round(time.monotonic() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    return result


def stat_gone(client, path: str) -> bool:
    from gfs.errors import NotFound
    try:
        client.stat(path)
    except NotFound:
        return True
    return False


def follower_catch_up(cluster, masters: dict, log: dict, phases: dict, timeout: float) -> dict:
    """Wipe a follower once the leader has a snapshot; time its catch-up by snapshot."""
    leader = wait_for("a leader", cluster.leader, 60)
    snapshot = Path(cluster.data_path(masters[leader])) / "raft" / "snapshot.bin"
    w, s = time.time(), time.monotonic()
    wait_for("the leader's first snapshot", snapshot.exists, timeout, 0.5)
    waited = time.monotonic() - s
    phases["until a snapshot"] = (w, time.time())
    follower = next(n for n in masters if n != leader)
    cluster.kill(follower)
    data = Path(cluster.data_path(masters[follower]))
    for sub in ("meta", "raft"):
        shutil.rmtree(data / sub, ignore_errors=True)
    target = cluster.master_status(masters[leader])["commit_index"]
    w, s = time.time(), time.monotonic()
    cluster.start(follower)
    try:
        wait_for("the wiped follower's catch-up",
                 lambda: caught_up(cluster, masters[follower], target), timeout, 0.2)
        took: float | None = round(time.monotonic() - s, 2)
    except TimeoutError:
        # Reported as such; the follower is stopped (its elections would disturb what follows)
        # and the rest runs on the two others, without the leader-restart phase.
        took = None
        received = sum(p.stat().st_size for p in (data / "raft").glob("snapshot.bin*.tmp"))
        cluster.kill(follower)
    phases["catch-up"] = (w, time.time())
    installed = log_time(log[follower], "installed snapshot from leader")
    out = {"follower": follower, "s": took, "waited_for_snapshot_s": round(waited, 1),
           "by_snapshot": installed is not None and installed >= w,
           "snapshot_bytes": snapshot.stat().st_size if snapshot.exists() else None}
    if took is None:
        out["not_caught_up_within_s"] = timeout
        out["snapshot_bytes_received_at_timeout"] = received
    return out


def leader_restart(cluster, masters: dict, phases: dict, timeout: float) -> dict:
    """kill -9 the leader: time until a leader with quorum serves a stat; then the old leader
    restarts and is timed until caught up."""
    leader = wait_for("a leader", cluster.leader, 60)
    w, s = time.time(), time.monotonic()
    cluster.kill(leader)
    wait_for("a new leader serving a stat", lambda: stat_served(cluster, BIG_DIR), timeout, 0.05)
    failover = time.monotonic() - s
    phases["leader killed"] = (w, time.time())
    new = wait_for("a leader", cluster.leader, 60)
    target = cluster.master_status(masters[new])["commit_index"]
    w, s = time.time(), time.monotonic()
    cluster.start(leader)
    wait_for("the old leader's restart", lambda: caught_up(cluster, masters[leader], target),
             timeout, 0.1)
    phases["old leader restarts"] = (w, time.time())
    return {"killed": leader, "new_leader_serves_stat_s": round(failover, 2),
            "old_leader_restart_to_caught_up_s": round(time.monotonic() - s, 2),
            "rss_after_restart_mib": mib(rss_now(cluster.pid(leader)))}


# --- report ------------------------------------------------------------------------------------

def _get(r: dict, *keys: str):
    """r[k1][k2]..., or None when a phase did not run (the run stopped early)."""
    for key in keys:
        if not isinstance(r, dict) or key not in r:
            return None
        r = r[key]
    return r


def markdown(r: dict) -> str:
    """The figures as markdown tables (— where a phase did not run)."""
    lines = [f"### Namespace scale: {r['files']:,} files in one directory ({r['directory']})", "",
             "| figure | value |", "|---|---|"]
    seed = r["seed"]
    g = lambda *keys: _get(r, *keys)      # noqa: E731
    rows = [
        ("seed: build through apply_batch (s)", seed.get("build_s")),
        ("seed: store size (MiB)", mib(seed.get("store_bytes"))),
        ("seed: restore into 3 masters (s)", seed.get("restore_s")),
        ("start: 3 masters to leader serving (s)", g("start_s")),
        ("RSS after start, per master (MiB)", _per(g("rss_after_start_mib"))),
        ("RSS peak over the run, per master (MiB)", _per(g("rss_peak_mib"))),
        ("wiped follower: catch-up (s)", g("catch_up", "s")),
        ("wiped follower: by snapshot", g("catch_up", "by_snapshot")),
        ("snapshot size (MiB)", mib(g("catch_up", "snapshot_bytes"))),
        ("wiped follower: not caught up within (s) / snapshot MiB received by then",
         None if g("catch_up", "not_caught_up_within_s") is None else
         f"{g('catch_up', 'not_caught_up_within_s')} / "
         f"{mib(g('catch_up', 'snapshot_bytes_received_at_timeout'))}"),
        ("leader kill -9: new leader serves stat (s)",
         g("leader_restart", "new_leader_serves_stat_s")),
        ("old leader: restart to caught up (s)",
         g("leader_restart", "old_leader_restart_to_caught_up_s")),
        ("list: pages / entries", f"{g('list', 'pages')} / {g('list', 'entries')}"),
        ("list: total (s)", g("list", "total_s")),
        ("list: per page p50 / p99 / max (ms)",
         f"{g('list', 'page_p50_ms')} / {g('list', 'page_p99_ms')} / {g('list', 'page_max_ms')}"),
        ("rm -r (to trash) call (s)", g("rm_r_s")),
        ("trash purge call (s)", g("purge_call_s")),
        ("trash purge until reaped (s)", g("purge_until_reaped_s")),
        ("tree gone afterwards", g("gone")),
        ("whole run (s)", g("wall_s")),
    ]
    if r.get("error"):
        rows.append(("**stopped early**", r["error"]))
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Another client's creates (mkdir, one Raft command each) during each phase:", "",
              "| phase | s | creates | p50 ms | p99 ms | max ms | failed | snapshots written "
              "(all masters) | leaders elected |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, p in r["phases"].items():
        c = p["creates"]
        lines.append(f"| {name} | {p['s']} | {c['n']} | {c['p50_ms']} | {c['p99_ms']} | "
                     f"{c['max_ms']} | {c['failed']} | {p['snapshots_written']} | "
                     f"{p['leaders_elected']} |")
    return "\n".join(lines) + "\n"


def _per(values: dict | None) -> str | None:
    return None if values is None else " / ".join(str(v) for v in values.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/nsscale-work")
    ap.add_argument("--template", default=None,
                    help="keep the built backup here and reuse it for the same --files")
    ap.add_argument("--window", type=float, default=15.0, help="baseline/after, seconds")
    ap.add_argument("--compact-entries", type=int, default=1000,
                    help="the masters' --compact-entries (the leader must snapshot soon)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per wait, seconds")
    ap.add_argument("--out", default=None, help="write DATE-namespace-scale-N.json/.md here")
    ap.add_argument("--logs", default=None, help="copy the masters' logs here at the end")
    ap.add_argument("--catch-up-timeout", type=float, default=600.0,
                    help="give up on the wiped follower after this long (reported; the run "
                         "goes on with two masters and no leader-restart phase)")
    a = ap.parse_args()
    r = run(a.files, a.work, a.window, a.compact_entries, a.template, a.timeout, a.logs,
            a.catch_up_timeout)
    text = markdown(r)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        day = f"{datetime.now(timezone.utc):%Y-%m-%d}"
        stem = os.path.join(a.out, f"{day}-namespace-scale-{a.files}")
        Path(stem + ".json").write_text(json.dumps(r, indent=2) + "\n")
        Path(stem + ".md").write_text(text)
    if r.get("error"):
        raise SystemExit(f"stopped early: {r['error']}")


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main()
