"""How long one applied command holds the apply thread when a tree of N files is deleted:
before (the whole tree in the delete command) and after (the tree unlinked by the delete, then
`reap` commands of GFS_REAP_BATCH inodes), over a real LMDB MetadataState (master/state.py) —
the same apply code the masters run, without Raft and gRPC around it.

    PYTHONPATH=. python -m bench.reap_scale [--files 100000] [--per-dir 1000] [--batch 500]
        [--trash]

With --trash the tree goes to the trash (`rm -r` as users run it) and that trash entry is then
purged: the delete's and the purge's apply times are reported too.

Reported per mode: the delete command's apply time (wall and CPU ms), the longest and total
apply time of the `reap` commands, and their number. A client's command queued behind the
apply thread waits at most the longest single apply (plus Raft), so that figure is what other
clients' p99 sees.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from gfs.checksum import inline_checksum
from master.state import MetadataState

NOW = 1_000
EMPTY_SUM = inline_checksum(b"")


def build(state: MetadataState, files: int, per_dir: int) -> int:
    """/tree/dK/fI: `files` inline-free empty committed files; returns the next log index."""
    index = state.applied_index()

    def run(commands: list[dict]) -> None:
        nonlocal index
        index += 1
        for result in state.apply_batch(index, commands):
            assert "ok" in result, result
    run([{"op": "mkdir", "path": "/tree", "parents": True, "mode": 0o755, "owner": "bench",
          "now": NOW}])
    dirs = -(-files // per_dir)
    run([{"op": "mkdir", "path": f"/tree/d{d}", "parents": False, "mode": 0o755,
          "owner": "bench", "now": NOW} for d in range(dirs)])
    for start in range(0, files, 1000):
        run([{"op": "put_inline", "path": f"/tree/d{i // per_dir}/f{i}", "data": b"",
              "checksum": EMPTY_SUM, "replication": 3, "storage_class": "hot", "chunk_size": 1 << 26,
              "mode": 0o644, "owner": "bench", "overwrite": False, "now": NOW}
             for i in range(start, min(files, start + 1000))])
    return index


def measure(files: int, per_dir: int, reap_over: int, batch: int, trash: bool = False) -> dict:
    """Delete /tree (into the trash and purge it, with `trash`) and reap what is queued; each
    apply timed in wall ms and in CPU ms of this process (the wall time of a loaded machine
    is mostly waiting for a core and for fsync)."""
    work = tempfile.mkdtemp(prefix="gfs-reap-bench-")
    try:
        with MetadataState(work, map_size=8 << 30) as state:
            index = build(state, files, per_dir)

            def timed(command: dict) -> tuple[dict, float, float]:
                nonlocal index
                index += 1
                t, c = time.perf_counter(), time.process_time()
                [res] = state.apply_batch(index, [command])
                assert "ok" in res, res
                return res["ok"], time.perf_counter() - t, time.process_time() - c

            out: dict = {}
            deleted, out["delete_apply_ms"], out["delete_cpu_ms"] = timed(
                {"op": "delete", "path": "/tree", "recursive": True, "trash": trash,
                 "user": "bench", "reap_over": reap_over, "now": NOW})
            if trash:
                purged, out["purge_apply_ms"], out["purge_cpu_ms"] = timed(
                    {"op": "trash_purge", "user": "bench", "all_users": False,
                     "ids": [deleted["trash_id"]], "before": 0, "reap_over": reap_over,
                     "now": NOW})
                assert purged == {"purged": 1}, purged
            reaps = []
            while state.reaping():
                reaps.append(timed({"op": "reap", "limit": batch, "now": NOW})[1:])
            out = {k: round(v * 1000, 1) for k, v in out.items()}
            out.update(reap_commands=len(reaps),
                       longest_reap_ms=round(max((w for w, _ in reaps), default=0) * 1000, 1),
                       longest_reap_cpu_ms=round(max((c for _, c in reaps), default=0) * 1000, 1),
                       all_reaps_s=round(sum(w for w, _ in reaps), 2))
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--trash", action="store_true",
                    help="rm -r into the trash, then purge it (else rm -r for good)")
    a = ap.parse_args()
    print(json.dumps({"files": a.files, "trash": a.trash,
                      "before (one command)": measure(a.files, a.per_dir, 0, a.batch, a.trash),
                      "after (reaped)": measure(a.files, a.per_dir, a.batch, a.batch, a.trash)},
                     indent=2))


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main()
